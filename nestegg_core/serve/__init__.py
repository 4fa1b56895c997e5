"""Serving: the composition of the app, the server and its pacing, mounted upstreams."""
