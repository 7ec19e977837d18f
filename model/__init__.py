"""model part of Sluice."""
