"""What importing nestegg costs: the public package, the errors, the tox and pytest plugins load
none of the mirror (waitress, requests) until something needs one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import nestegg_core

HEAVY = ("waitress", "requests", "urllib3", "yaml", "multipart", "filelock")


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    script = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    "statement",
    [
        "import nestegg_core",
        "import nestegg_core.errors",
        "import nestegg_core.testing.pytest_plugin",
    ],
)
def test_an_import_loads_nothing_of_the_mirror(statement: str) -> None:
    loaded = loaded_after(statement)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"{statement!r} loads {heavy}"


def test_the_tox_plugin_loads_only_the_settings_of_a_tox_run() -> None:
    ours = {m for m in loaded_after("import tox_nestegg.plugin") if m.startswith("nestegg_core")}
    assert ours == {
        "nestegg_core",
        "nestegg_core.toxrun",
        "nestegg_core.toxrun.settings",
        "nestegg_core.toxrun._tox",
    }


def test_the_public_names_are_imported_on_first_use() -> None:
    assert dir(nestegg_core) == nestegg_core.__all__
    for name in nestegg_core.__all__:
        assert getattr(nestegg_core, name) is not None
    assert nestegg_core.Mirror.__module__ == "nestegg_core.serve.server"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nestegg_core.nope  # noqa: B018 - the attribute lookup is the test
