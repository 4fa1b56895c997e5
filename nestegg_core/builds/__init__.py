"""Source builds and CI: git and hg, builds into the private store, test runs and their history."""
