"""The tox side of nestegg; ``tox_nestegg.plugin`` holds only the hooks."""
