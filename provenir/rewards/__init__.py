"""provenir.rewards."""
