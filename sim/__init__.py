"""sim part of Sluice."""
