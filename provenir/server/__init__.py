"""provenir.server."""
