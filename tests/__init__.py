"""Test suite package (a package so ``python -m tests.upstreams.…`` works)."""
