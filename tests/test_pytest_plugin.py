"""The pytest plugin as another project uses it: only the documented fixtures, in a pytest run of its own."""

from __future__ import annotations

import pytest

from nestegg_core.testing.pytest_plugin import PrivateIndex

pytestmark = pytest.mark.slow

OUTSIDE_TEST = """
import subprocess
import sys

from nestegg_core.testing import find_uv, make_venv


def test_pip_and_uv_install_from_the_private_index(nestegg_index, tmp_path):
    nestegg_index.add("outside-lib", "1.0", requires_dist=["outside-dep>=2"], extras={"x": ["outside-x"]})
    nestegg_index.add("outside-dep", "2.1")
    nestegg_index.add("outside-dep", "2.2", yanked=True)
    nestegg_index.add("outside-x", "0.1", sdist=False)
    env = nestegg_index.env()
    pip_python = make_venv(tmp_path / "pip")
    subprocess.run([str(pip_python), "-m", "pip", "install", "outside-lib[x]"], env=env, check=True)
    uv_python = make_venv(tmp_path / "uv")
    uv = [find_uv(), "pip", "install", "--python", str(uv_python)]
    subprocess.run([*uv, "outside-lib[x]"], env=env, check=True)
    for python in (pip_python, uv_python):
        out = subprocess.run(
            [str(python), "-c", "import outside_lib, outside_dep, outside_x; print(outside_dep.__version__)"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert out.strip() == "2.1"


def test_mirror_fixture_caches_the_upstream(nestegg_mirror, tmp_path):
    python = make_venv(tmp_path / "m")
    from nestegg_core.testing import installer_env
    subprocess.run([str(python), "-m", "pip", "install", "mirrored-pkg"],
                   env=installer_env(nestegg_mirror.index_url), check=True)
    assert (nestegg_mirror.repository.store.files / "mirrored-pkg").is_dir()


def test_two_indexes(nestegg_index_factory):
    first, second = nestegg_index_factory(), nestegg_index_factory()
    assert first.index_url != second.index_url
"""


def test_outside_project_uses_the_fixtures(
    pytester: pytest.Pytester,
    upstream: PrivateIndex,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream.add("mirrored-pkg", "1.0")
    pytester.makepyfile(test_outside=OUTSIDE_TEST)
    # the project's nestegg.yml, written for `nestegg serve` behind nginx and a proxy: the session's
    # mirror still sends its files itself, at its own URL
    pytester.makefile(
        ".yml", nestegg="nestegg:\n  public_url: http://127.0.0.1:9/\n  sendfile: x-accel-redirect\n"
    )
    monkeypatch.delenv("NESTEGG_CONFIG", raising=False)
    cache = tmp_path_factory.mktemp("kept-cache")
    # the session mirror's upstream is the index pip is configured with: point that at our fake
    monkeypatch.setenv("PIP_INDEX_URL", upstream.index_url)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--nestegg-cache-dir={cache}")
    result.assert_outcomes(passed=3)
    assert list(cache.glob("mirror/*/files/mirrored-pkg"))
    # a second run, offline, from the kept cache
    upstream.stop()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--nestegg-cache-dir={cache}", "--nestegg-offline", "-k", "mirror"
    )
    result.assert_outcomes(passed=1)
