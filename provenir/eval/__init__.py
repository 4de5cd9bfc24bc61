"""provenir.eval."""
