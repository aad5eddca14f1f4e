"""Markup shared by the thinking tests."""

from __future__ import annotations

DETAILS = (
    '<details type="reasoning" done="true" duration="2">\n<summary>Thought for 2 seconds</summary>\n'
    "> The user says hi.\n> I should greet back.\n</details>\n<answer>Hello! How can I help?</answer>"
)
