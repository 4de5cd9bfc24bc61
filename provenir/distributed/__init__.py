"""provenir.distributed."""
