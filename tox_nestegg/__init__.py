"""tox-nestegg: with this installed, plain ``tox`` installs everything through a nestegg mirror."""
