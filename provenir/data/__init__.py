"""provenir.data."""
