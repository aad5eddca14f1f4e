"""Canonical types, errors, the request pipeline and stream helpers."""
