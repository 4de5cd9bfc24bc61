"""provenir.adapters."""
