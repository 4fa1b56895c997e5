"""The WSGI layer: routing, files and ranges, uploads, credentials checks, middleware."""
