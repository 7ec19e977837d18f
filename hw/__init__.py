"""hw part of Sluice."""
