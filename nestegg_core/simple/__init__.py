"""The Simple Repository API as values: models, parsing, rendering, client profiles, dist metadata."""
