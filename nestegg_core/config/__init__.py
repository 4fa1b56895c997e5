"""Configuration: nestegg.yml, each setting declared once, the index pip uses, the users file."""
