"""Upstream providers, one module or package each, behind `providers.base.Provider`."""
