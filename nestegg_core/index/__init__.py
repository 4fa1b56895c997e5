"""The index served: the upstream client, downloads, the mirror, and the repository of both stores."""
