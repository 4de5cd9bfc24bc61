"""provenir.governance."""
