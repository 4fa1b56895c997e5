"""The web interface (pages for people), loaded on its first request."""
