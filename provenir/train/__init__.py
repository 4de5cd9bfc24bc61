"""provenir.train."""
