"""What `chatbridge check-config` reports: one finding per thing it looked at, with a fix when it is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    subject: str
    message: str
    fix: str | None = None
