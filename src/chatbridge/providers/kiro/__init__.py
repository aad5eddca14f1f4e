"""Kiro: Claude through a Kiro IDE login (social or IdC token file, refresh tokens, API keys)."""
