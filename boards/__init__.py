"""boards part of Sluice."""
