"""Real pip and uv installing through a mirror of the fake upstream, then again with it down."""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Config, Mirror
from nestegg_core.index.repository import Repository
from nestegg_core.simple.models import DistFile
from nestegg_core.storage.pagestate import PageState, StateHeader
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory
from .loopback import install_command

pytestmark = pytest.mark.slow

REQUIREMENTS = ["Top_Pkg[fancy]", "sdist.only", "py-filter"]


@pytest.fixture
def packages(upstream: PrivateIndex) -> None:
    upstream.add("top-pkg", "1.0", requires_dist=["Dep.One>=1"], extras={"fancy": ["extra_dep"]})
    upstream.add("dep-one", "1.0")
    upstream.add("dep-one", "1.1", yanked="broken")
    upstream.add("extra-dep", "0.5", sdist=False)
    upstream.add("sdist-only", "1.0", wheel=False)
    upstream.add("py-filter", "1.0", requires_python=">=3.8")
    upstream.add("py-filter", "2.0", requires_python=">=4")


def installed(python: Path) -> dict[str, str]:
    script = (
        "import importlib.metadata as m; "
        "print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))"
    )
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(line.lower().replace("_", "-").split("==") for line in out.split())


EXPECTED = {
    "top-pkg": "1.0",
    "dep-one": "1.0",  # 1.1 is yanked
    "extra-dep": "0.5",
    "sdist-only": "1.0",
    "py-filter": "1.0",  # 2.0 needs Python 4
}


def pip_install(python: Path, index_url: str) -> subprocess.CompletedProcess[str]:
    command = [str(python), "-m", "pip", "install", "-v", "--no-cache-dir", *REQUIREMENTS]
    return subprocess.run(command, env=installer_env(index_url), capture_output=True, text=True, check=False)


def uv_install(python: Path, index_url: str) -> subprocess.CompletedProcess[str]:
    uv = find_uv()
    assert uv is not None
    command = [uv, "pip", "install", "--no-cache", "--python", str(python), *REQUIREMENTS]
    return subprocess.run(command, env=installer_env(index_url), capture_output=True, text=True, check=False)


@pytest.mark.usefixtures("packages")
def test_pip_and_uv_install_through_the_mirror_then_offline(
    tmp_path: Path, make_mirror: MirrorFactory, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nestegg_core.access")
    mirror = make_mirror(ttl=0)
    for name, install in (("pip", pip_install), ("uv", uv_install)):
        python = make_venv(tmp_path / f"venv-{name}")
        result = install(python, mirror.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert EXPECTED.items() <= installed(python).items(), name
    # both clients took metadata from the PEP 658 files, not from whole wheels
    access = "\n".join(r.getMessage() for r in caplog.records)
    assert '.whl.metadata" 200' in access
    assert faults.count(prefix="/files/dep-one/dep_one-1.1") == 0  # the yanked release never fetched

    # the upstream goes down: everything comes from the cache
    faults.status = 503
    faults.reset()
    for name, install in (("pip", pip_install), ("uv", uv_install)):
        python = make_venv(tmp_path / f"venv-{name}-offline")
        result = install(python, mirror.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert EXPECTED.items() <= installed(python).items(), name
    assert all(seen.path.startswith("/simple/") for seen in faults.seen)


@pytest.mark.usefixtures("packages")
def test_uv_installs_the_wheels_pip_cached_with_the_upstream_down_then_offline(
    tmp_path: Path, make_mirror: MirrorFactory, faults: Faults
) -> None:
    # pip takes small wheels whole, never their metadata; uv reads each wheel's metadata first
    mirror = make_mirror(ttl=0)
    python = make_venv(tmp_path / "venv-pip")
    result = pip_install(python, mirror.index_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [seen.path for seen in faults.seen if seen.path.endswith(".metadata")]

    faults.status = 503
    for name, install in (("uv", uv_install), ("pip", pip_install)):
        python = make_venv(tmp_path / f"venv-{name}-down")
        result = install(python, mirror.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert EXPECTED.items() <= installed(python).items(), name

    mirror.stop()
    offline = make_mirror(offline=True)
    for name, install in (("uv", uv_install), ("pip", pip_install)):
        python = make_venv(tmp_path / f"venv-{name}-offline")
        result = install(python, offline.index_url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert EXPECTED.items() <= installed(python).items(), name


def test_pip_and_uv_install_the_cached_version_offline(
    tmp_path: Path, make_mirror: MirrorFactory, upstream: PrivateIndex
) -> None:
    # an offline page that listed 2.0, never cached, had both pick it and fail on its 404
    upstream.add("alpha", "1.0")
    upstream.add("alpha", "2.0")
    online = make_mirror(fetch_ahead=0, pages_ahead=False)
    python = make_venv(tmp_path / "venv-online")
    command = install_command("pip", python, "alpha==1.0")
    result = subprocess.run(
        command, env=installer_env(online.index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    online.stop()
    offline = make_mirror(offline=True, fetch_ahead=0, pages_ahead=False)
    for installer in ("pip", "uv"):
        python = make_venv(tmp_path / f"venv-{installer}-offline")
        command = install_command(installer, python, "alpha")
        env = installer_env(offline.index_url)
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed(python)["alpha"] == "1.0", installer


def _install(installer: str, python: Path, requirement: str, index_url: str) -> None:
    command = install_command(installer, python, requirement)
    env = installer_env(index_url)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("down", ["error", "refused"])
def test_pip_and_uv_install_the_cached_version_while_the_upstream_is_down(
    tmp_path: Path,
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    faults: Faults,
    caplog: pytest.LogCaptureFixture,
    down: str,
) -> None:
    # the page served in the upstream's place listed 2.0, never cached: both picked it and failed
    # on its 502; once the upstream answers again, its whole page is served, 2.0 installed
    upstream.add("alpha", "1.0")
    upstream.add("alpha", "2.0")
    mirror = make_mirror(ttl=0, fetch_ahead=0, pages_ahead=False)
    _install("pip", make_venv(tmp_path / "venv-up"), "alpha==1.0", mirror.index_url)
    port = urlsplit(upstream.url).port
    if down == "error":
        faults.status = 503
    else:
        upstream.stop()  # every connection refused
    caplog.set_level(logging.INFO, logger="nestegg_core")
    for installer in ("pip", "uv"):
        python = make_venv(tmp_path / f"venv-{installer}-down")
        _install(installer, python, "alpha", mirror.index_url)
        assert installed(python)["alpha"] == "1.0", installer
    said = [r.getMessage() for r in caplog.records if "cached files only" in r.getMessage()]
    assert len(said) == 1, said  # once for the project, not once per request
    if down == "error":
        faults.status = None
    else:
        upstream.mirror = Mirror(upstream.mirror.config.with_changes(port=port), middleware=faults).start()
        mirror.repository.circuits.reset()  # the probe would find it back after the circuit's window
    for installer in ("pip", "uv"):
        python = make_venv(tmp_path / f"venv-{installer}-back")
        _install(installer, python, "alpha", mirror.index_url)
        assert installed(python)["alpha"] == "2.0", installer


@pytest.mark.parametrize("down", ["offline", "refused"])
def test_pip_and_uv_say_the_cache_has_nothing_of_a_project_whose_page_alone_is_kept(
    tmp_path: Path,
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    http: requests.Session,
    down: str,
) -> None:
    # a page kept with no file cached was an empty 200 (offline) or listed what could not come
    # (down): 'no matching distribution', where a name never asked was a 410 that says why
    upstream.add("alpha", "1.0")
    mirror = make_mirror(ttl=0, fetch_ahead=0, pages_ahead=False)
    assert http.get(mirror.index_url + "alpha/").status_code == 200  # its page kept, no file
    if down == "offline":
        mirror.stop()
        mirror = make_mirror(offline=True)
        why = "nestegg is offline"
    else:
        upstream.stop()
        why = "is unreachable (connection refused)"
    for name in ("alpha", "never-asked"):  # the same answer
        answer = http.get(f"{mirror.index_url}{name}/")
        assert answer.status_code == 410, answer.text
        assert answer.reason.startswith(f"the cache has nothing for {name!r} and "), answer.reason
        assert why in answer.reason
    for installer in ("pip", "uv"):
        python = make_venv(tmp_path / f"venv-{installer}")
        command = install_command(installer, python, "alpha")
        result = subprocess.run(
            command, env=installer_env(mirror.index_url), capture_output=True, text=True, check=False
        )
        assert result.returncode != 0
        output = " ".join((result.stdout + result.stderr).split())
        # pip shows no page's reason, as for a name never cached; uv shows the mirror's words
        said = "(from versions: none)" if installer == "pip" else "the cache has nothing for 'alpha'"
        assert said in output, (installer, output)


@pytest.mark.usefixtures("packages")
def test_hash_checking_mode(tmp_path: Path, mirror: Mirror, upstream: PrivateIndex) -> None:
    # pip's --require-hashes compares against what the mirror serves: it must be the upstream's hash
    page = upstream.mirror.repository.private.page("dep-one")  # type: ignore[arg-type]
    assert page is not None
    wheel = next(d for d in page.files if d.filename.endswith(".whl") and d.version == "1.0")
    requirements = tmp_path / "req.txt"
    requirements.write_text(f"dep-one==1.0 --hash=sha256:{wheel.sha256}\n")
    python = make_venv(tmp_path / "venv")
    command = [
        str(python),
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--only-binary=:all:",
        "-r",
        str(requirements),
    ]
    result = subprocess.run(
        command,
        env=installer_env(mirror.index_url),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_uv_says_an_offline_mirror_has_nothing_cached(tmp_path: Path) -> None:
    # uv shows of a 404 only that the package is not in the registry: the mirror's words must reach it
    config = Config(
        nestegg_dir=tmp_path / "nest", port=0, index_url="http://127.0.0.1:9/simple/", offline=True
    )
    mirror = Mirror(config).start()
    try:
        python = make_venv(tmp_path / "venv")
        uv = find_uv()
        assert uv is not None
        command = [uv, "pip", "install", "--no-cache", "--python", str(python), "Top_Pkg"]
        env = installer_env(mirror.index_url)
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)
    finally:
        mirror.stop()
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "the cache has nothing for 'top-pkg' and nestegg is offline" in output, output


@pytest.mark.usefixtures("packages")
def test_uv_gets_its_files_without_their_pages_made_again(
    tmp_path: Path, make_mirror: MirrorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv asks for every page, then for each wheel's metadata and file, many at once: by then the
    pages are dropped from memory (here all but one), and each file's entry is read from its
    page's state alone, not the page made again from it (``MirrorIndex.entry``)."""
    mirror = make_mirror()
    mirror.repository.refresher.stop()  # its pages made again once uv is gone are not counted
    index = mirror.repository.mirror
    index.max_files = 1
    local = threading.local()
    made: list[str] = []  # pages made again from their state for a file or its metadata
    entries: list[str] = []
    read_page, read_entry = index.store.read_page, index.store.read_page_entry

    def page_read(name: NormalizedName) -> PageState | None:
        if getattr(local, "file", False):
            made.append(name)
        return read_page(name)

    def entry_read(name: NormalizedName, filename: str) -> tuple[StateHeader, DistFile | None] | None:
        entries.append(filename)
        return read_entry(name, filename)

    open_any = Repository.open_any

    def opening(self: Repository, *args: Any, **kwargs: Any) -> Any:
        local.file = True
        try:
            return open_any(self, *args, **kwargs)
        finally:
            local.file = False

    monkeypatch.setattr(index.store, "read_page", page_read)
    monkeypatch.setattr(index.store, "read_page_entry", entry_read)
    monkeypatch.setattr(Repository, "open_any", opening)
    python = make_venv(tmp_path / "venv")
    result = uv_install(python, mirror.index_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert EXPECTED.items() <= installed(python).items()
    assert made == []
    # the wheels' metadata and the files of the pages dropped from memory by then: all but the
    # one or two a client asked for last, of five
    assert len(set(entries)) >= 3, entries
