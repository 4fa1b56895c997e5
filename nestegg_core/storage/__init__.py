"""What nestegg keeps on disk: the cache, page state, rendered pages, the private store, counters."""
