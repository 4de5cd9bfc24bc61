"""The REST API (FastAPI) and its Ray Serve deployment."""
