"""Sluice: a generator for channel-gating CNN accelerators."""

__version__ = "0.1.0"
