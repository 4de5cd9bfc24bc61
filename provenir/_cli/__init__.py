"""CLI command modules: each public module here has ``register(app)`` and is loaded by ``provenir.cli``."""
