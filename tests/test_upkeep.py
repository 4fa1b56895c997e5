"""Cache upkeep: last-use stamps, ``nestegg prune``, the size limit while serving, ``nestegg export``."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror
from nestegg_core.cli import main
from nestegg_core.config.sizes import parse_size
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage.pagestate import PageState
from nestegg_core.storage.private import UPLOADS, PrivateStore
from nestegg_core.storage.store import CacheStore
from nestegg_core.storage.usage import USED_RESOLUTION, SizeLimit, cached_files, mark_used, prune
from nestegg_core.testing import installer_env
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory

DAY = 86400.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        (1234, 1234),
        ("500", 500),
        ("10b", 10),
        ("1k", 1024),
        ("2K", 2048),
        ("1KB", 1024),
        ("1KiB", 1024),
        ("500M", 500 * 1024**2),
        ("1.5G", int(1.5 * 1024**3)),
        (" 20 GiB ", 20 * 1024**3),
        ("1t", 1024**4),
    ],
)
def test_parse_size(value: str | int, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value", ["", "0", "0.1", "-5M", "5X", "M", "lots", None, True, 0, -1, 1.5, "1.5.2G"]
)
def test_parse_size_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size like 500M or 20G"):
        parse_size(value)


# last use ------------------------------------------------------------------------------------------


def test_a_hit_refreshes_an_old_stamp_only(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, "http://127.0.0.1:9/simple/")
    record = store.record_path(NormalizedName("pkg"), "pkg-1.0.tar.gz")
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    now = time.time()
    os.utime(record, (now - 10, now - 10))
    mark_used(store, NormalizedName("pkg"), "pkg-1.0.tar.gz", now=now)
    assert record.stat().st_mtime == pytest.approx(now - 10)  # recent enough: no write
    os.utime(record, (now - USED_RESOLUTION - 1,) * 2)
    mark_used(store, NormalizedName("pkg"), "pkg-1.0.tar.gz", now=now)
    assert record.stat().st_mtime == pytest.approx(now)
    # a pruned file: nothing to note, no error
    mark_used(store, NormalizedName("pkg"), "gone-1.0.tar.gz", now=now)


# prune ---------------------------------------------------------------------------------------------


@pytest.fixture
def wheels(upstream: PrivateIndex) -> dict[str, str]:
    """Four projects of one wheel each, by project name: the wheel's filename."""
    found = {}
    for name in ("alpha", "beta", "gamma", "delta"):
        record = upstream.add(name, "1.0", sdist=False, payload_size=40_000)[0]
        found[name] = record.filename
    return found


def fetch(mirror: Mirror, http: requests.Session, name: str, filename: str) -> bytes:
    http.get(f"{mirror.index_url}{name}/").raise_for_status()
    answer = http.get(f"{mirror.url}/files/{name}/{filename}")
    answer.raise_for_status()
    return answer.content


def age(mirror: Mirror, name: NormalizedName, filename: str, days: float) -> None:
    """Make a cached file look last used ``days`` ago."""
    when = time.time() - days * DAY
    os.utime(mirror.repository.store.record_path(name, filename), (when, when))


def cli(tmp_path: Path, upstream: PrivateIndex, *args: str) -> int:
    config = tmp_path / "cli.yml"
    if not config.exists():
        config.write_text("nestegg: {}\n")
    nest = str(tmp_path / "nest")
    # main() points logging at this test's captured stderr: put it back, or later tests' threads
    # would log into a closed stream
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return main(["--config", str(config), "--cache-dir", nest, "--index-url", upstream.index_url, *args])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_prune_older_than_keeps_the_recently_used_and_private_files(
    tmp_path: Path,
    mirror: Mirror,
    http: requests.Session,
    upstream: PrivateIndex,
    faults: Faults,
    wheels: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, filename in wheels.items():
        fetch(mirror, http, name, filename)
        age(mirror, NormalizedName(name), filename, days=10)
    fetch(mirror, http, "gamma", wheels["gamma"])  # served again: used now
    own = upstream.add("own-tool", "1.0", sdist=False)[0]
    mirror.repository.private.add(upstream.root / "nest" / "private" / "own-tool" / own.filename)
    private_file = tmp_path / "nest" / "private" / "own-tool" / own.filename
    os.utime(private_file, (time.time() - 100 * DAY,) * 2)

    assert cli(tmp_path, upstream, "prune", "--older-than", "7") == 0
    assert "removed 3 files" in capsys.readouterr().out
    store = mirror.repository.store
    assert [f.name for f in cached_files(tmp_path / "nest")] == ["gamma"]
    assert not store.file_path(NormalizedName("alpha"), wheels["alpha"]).exists()
    assert not store.record_path(NormalizedName("alpha"), wheels["alpha"]).exists()
    assert private_file.is_file()
    # the page still lists the pruned file; asking for it fetches it again
    assert fetch(mirror, http, "alpha", wheels["alpha"])
    assert faults.count(f"/files/alpha/{wheels['alpha']}") == 2
    assert faults.count(f"/files/gamma/{wheels['gamma']}") == 1


def test_prune_to_a_size_removes_the_least_recently_used_first(
    tmp_path: Path, mirror: Mirror, http: requests.Session, wheels: dict[str, str]
) -> None:
    for days, (name, filename) in zip((3, 1, 4, 2), wheels.items(), strict=True):
        fetch(mirror, http, name, filename)
        age(mirror, NormalizedName(name), filename, days=days)
    files = {f.name: f for f in cached_files(tmp_path / "nest")}
    keep = files[NormalizedName("beta")].size + files[NormalizedName("delta")].size
    dry = prune(tmp_path / "nest", max_size=keep, dry_run=True)
    assert [f.name for f in dry.removed] == ["gamma", "alpha"]
    assert len(cached_files(tmp_path / "nest")) == 4
    result = prune(tmp_path / "nest", max_size=keep)
    assert [f.name for f in result.removed] == ["gamma", "alpha"]
    assert (result.kept, result.size) == (2, keep)
    assert sorted(f.name for f in cached_files(tmp_path / "nest")) == ["beta", "delta"]


def test_prune_leaves_a_file_being_downloaded_and_removes_old_leftovers(
    tmp_path: Path, mirror: Mirror, http: requests.Session, wheels: dict[str, str]
) -> None:
    for name, filename in wheels.items():
        fetch(mirror, http, name, filename)
    store = mirror.repository.store
    abandoned = store.files / "alpha" / f".{wheels['alpha']}.999.0.part"
    in_progress = store.files / "beta" / f".{wheels['beta']}.999.0.part"
    old_tmp = store.files / "alpha" / f".{wheels['alpha']}.json.abc.tmp"
    new_tmp = store.files / "alpha" / f".{wheels['alpha']}.json.def.tmp"
    for path in (abandoned, in_progress, old_tmp, new_tmp):
        path.write_bytes(b"x")
    os.utime(old_tmp, (time.time() - 2 * DAY,) * 2)
    with store.lock(NormalizedName("beta"), wheels["beta"]):  # another process is downloading it
        result = prune(tmp_path / "nest", max_size=1)
    assert sorted(f.name for f in result.removed) == ["alpha", "delta", "gamma"]
    assert [f.name for f in cached_files(tmp_path / "nest")] == ["beta"]
    assert result.leftovers == 2
    assert not abandoned.exists()
    assert not old_tmp.exists()
    assert in_progress.exists()
    assert new_tmp.exists()


def test_prune_removes_what_crashes_left_of_uploads_and_keeps_what_is_young_or_published(
    tmp_path: Path, upstream: PrivateIndex
) -> None:
    nest = tmp_path / "nest"
    store = PrivateStore(nest / "private")
    wheel = make_wheel(PackageSpec(name="mine", version="1.0"), tmp_path / "dists")
    store.add(wheel)
    uploads = nest / UPLOADS
    uploads.mkdir(parents=True)
    received = [uploads / ".upload-old.whl", uploads / ".upload-new.whl"]
    half = [store.root / "mine" / f".{wheel.name}.metadata.old.tmp", store.root / "mine" / ".x.json.new.tmp"]
    aside = store.root / ".new-other.123.abcd"
    aside.mkdir()
    (aside / "other-1.0.tar.gz").write_bytes(b"x")
    old = time.time() - 2 * DAY
    for path in (*received, *half):
        path.write_bytes(b"x" * 1000)
    for path in (received[0], half[0], aside):
        os.utime(path, (old, old))
    assert cli(tmp_path, upstream, "prune", "--older-than", "30") == 0
    assert [p.exists() for p in (*received, *half, aside)] == [False, True, False, True, False]
    assert store.page(NormalizedName("mine")) is not None
    assert wheel.name in {p.name for p in (store.root / "mine").iterdir()}


def test_prune_command_line(
    tmp_path: Path,
    mirror: Mirror,
    http: requests.Session,
    upstream: PrivateIndex,
    wheels: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fetch(mirror, http, "alpha", wheels["alpha"])
    assert cli(tmp_path, upstream, "prune") == 2
    assert "error: say what to prune: --max-size SIZE, --older-than DAYS" in capsys.readouterr().err
    assert cli(tmp_path, upstream, "prune", "--max-size", "lots") == 2
    expected = "error: --max-size: expected a size like 500M or 20G (K, M, G, T), got 'lots'"
    assert expected in capsys.readouterr().err
    for days in ("-1", "nan", "inf"):
        assert cli(tmp_path, upstream, "prune", "--older-than", days) == 2
        assert (
            f"error: --older-than: expected a number of days >= 0, got {float(days)!r}"
            in capsys.readouterr().err
        )
    assert cli(tmp_path, upstream, "prune", "--max-size", "1k", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"alpha/{wheels['alpha']} (")
    assert "would remove 1 files" in out
    assert len(cached_files(tmp_path / "nest")) == 1
    (tmp_path / "cli.yml").write_text("nestegg:\n  max_cache_size: 1k\n")  # the config's limit
    assert cli(tmp_path, upstream, "prune") == 0
    assert "removed 1 files" in capsys.readouterr().out
    assert cached_files(tmp_path / "nest") == []


def test_size_limit_applied_while_serving(
    tmp_path: Path, make_mirror: MirrorFactory, http: requests.Session, wheels: dict[str, str]
) -> None:
    limit = 100_000  # room for two of the ~40 kB wheels, with their records
    mirror = make_mirror(max_cache_size=limit)
    size_limit = mirror.repository.size_limit
    assert size_limit is not None
    for name, filename in wheels.items():
        fetch(mirror, http, name, filename)
        time.sleep(0.02)  # distinct last-use stamps
    # the last file is noted once its download thread is done, maybe after the client got it all
    deadline = time.monotonic() + 10
    while sum(f.size for f in cached_files(tmp_path / "nest")) > limit and time.monotonic() < deadline:
        size_limit.wait(1)
        time.sleep(0.05)
    left = cached_files(tmp_path / "nest")
    assert sum(f.size for f in left) <= limit
    assert len(left) < len(wheels)
    assert "delta" in {f.name for f in left}  # the newest stays


PIP = "pip/24.0 " + json.dumps({"python": "3.11.7", "implementation": {"name": "CPython"}})


@pytest.mark.parametrize("by", ["prune", "size limit"])
def test_renderings_that_can_never_be_served_again_are_removed(
    tmp_path: Path, make_mirror: MirrorFactory, http: requests.Session, wheels: dict[str, str], by: str
) -> None:
    # no wheel guessed as pip's next is downloaded with its page: the pages stay as rendered
    mirror = make_mirror(compatible_only=True, fetch_ahead=0)
    # asked for by another machine's name (through a front server), each encoding is kept
    http.headers["Host"] = f"pypi.example.com:{mirror.port}"
    for name in wheels:
        for agent in (None, PIP):
            for accept in ("text/html", "application/vnd.pypi.simple.v1+json"):
                for encoding in ("identity", "gzip"):
                    headers = {
                        "Accept": accept,
                        "Accept-Encoding": encoding,
                        **({"User-Agent": agent} if agent else {}),
                    }
                    http.get(f"{mirror.index_url}{name}/", headers=headers).raise_for_status()
    store, rendered = mirror.repository.store, mirror.repository.pages.folder

    def renderings(name: str) -> list[Path]:
        own = [*rendered.glob(f"{name}.*"), *rendered.glob(f"{name}.clients/*")]
        return sorted(p for p in own if p.is_file() and not p.is_symlink())

    assert all(len(renderings(name)) == 8 for name in wheels)  # 2 formats, 2 encodings, 2 clients
    store.page_path(NormalizedName("alpha")).unlink()  # its page is no longer cached
    old = time.time() - 100
    for path in renderings("beta"):  # made from an older state than the one on disk now
        os.utime(path, (old, old))
    crashed, writing = rendered / ".delta.json.abc.tmp", rendered / ".delta.json.def.tmp"
    for path in (crashed, writing):
        path.write_bytes(b"x")
    os.utime(crashed, (time.time() - 2 * DAY,) * 2)
    outside = tmp_path / "outside"
    outside.write_bytes(b"not nestegg's")
    (rendered / "gamma.linked").symlink_to(outside)
    if by == "prune":
        swept = prune(tmp_path / "nest", older_than=100 * DAY)
    else:
        limit = SizeLimit(tmp_path / "nest", 10**12)  # far from full: nothing else is pruned
        limit.cached(DistFile(filename="x-1.0.tar.gz", size=1))
        limit.wait(10)
    assert renderings("alpha") == renderings("beta") == []
    assert not (rendered / "alpha.clients").exists()
    assert len(renderings("gamma")) == len(renderings("delta")) == 8
    assert not crashed.exists()
    assert writing.exists()
    assert (rendered / "gamma.linked").is_symlink()
    assert outside.read_bytes() == b"not nestegg's"
    assert len(cached_files(tmp_path / "nest")) == 0
    if by == "prune":
        assert swept.renderings == 17
    # the pages still answer, rendered again
    for name in wheels:
        for agent in (None, PIP):
            headers = {"User-Agent": agent} if agent else {}
            http.get(f"{mirror.index_url}{name}/", headers=headers).raise_for_status()


# export ----------------------------------------------------------------------------------------------


def sdist_needing(upstream: PrivateIndex, tmp_path: Path, name: str, build_requires: str) -> None:
    """Publish an sdist (only) whose build needs ``build_requires`` from the index."""
    original = make_sdist(PackageSpec(name=name, version="1.0"), tmp_path / "generated")
    target = tmp_path / "rewritten" / original.name
    target.parent.mkdir(parents=True)
    with tarfile.open(original) as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            content = data.read() if data is not None else None
            if content is not None and member.name.endswith("/pyproject.toml"):
                content = content.replace(b"requires = []", f'requires = ["{build_requires}"]'.encode())
                assert build_requires.encode() in content
                member.size = len(content)
            out.addfile(member, io.BytesIO(content) if content is not None else None)
    upstream.publish(target)


@pytest.fixture
def team(upstream: PrivateIndex, tmp_path: Path) -> None:
    upstream.add("exp-app", "1.0", requires_dist=["exp-lib>=2", "exp-tool"])
    upstream.add("exp-lib", "1.0")
    upstream.add("exp-lib", "2.0")
    upstream.add("exp-helper", "3.0", sdist=False)
    sdist_needing(upstream, tmp_path, "exp-tool", "exp-helper")


def pip(*args: str, index_url: str | None = None) -> None:
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(
        command, env=installer_env(index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    """A plain static file server (the standard library's) on 127.0.0.1:0."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.usefixtures("team")
def test_export_of_projects_writes_a_static_pep503_and_pep691_tree(
    tmp_path: Path,
    mirror: Mirror,
    http: requests.Session,
    upstream: PrivateIndex,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = http.get(f"{mirror.index_url}exp-lib/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    for entry in page.json()["files"]:
        http.get(f"{mirror.url}/files/exp-lib/{entry['filename']}").raise_for_status()
    own = upstream.add("own-tool", "1.0", sdist=False)[0]
    mirror.repository.private.add(upstream.root / "nest" / "private" / "own-tool" / own.filename)
    dest = tmp_path / "export"

    projects = ("--project", "Exp_Lib>=2", "--project", "own-tool")
    assert cli(tmp_path, upstream, "export", str(dest), *projects) == 0
    assert "exported 3 files of 2 projects" in capsys.readouterr().out
    files = sorted(p.name for p in (dest / "files").iterdir())
    assert files == [
        "exp_lib-2.0-py3-none-any.whl", "exp_lib-2.0-py3-none-any.whl.metadata", "exp_lib-2.0.tar.gz",
        own.filename, f"{own.filename}.metadata",
    ]  # fmt: skip
    index = json.loads((dest / "simple" / "index.json").read_text())
    assert [p["name"] for p in index["projects"]] == ["exp-lib", "own-tool"]
    assert 'href="exp-lib/"' in (dest / "simple" / "index.html").read_text()
    lib = json.loads((dest / "simple" / "exp-lib" / "index.json").read_text())
    for entry in lib["files"]:
        path = dest / "simple" / "exp-lib" / entry["url"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["hashes"]["sha256"]
        if entry["filename"].endswith(".whl"):
            metadata = Path(f"{path}.metadata").read_bytes()
            assert hashlib.sha256(metadata).hexdigest() == entry["core-metadata"]["sha256"]
    html = (dest / "simple" / "exp-lib" / "index.html").read_text()
    assert 'href="../../files/exp_lib-2.0.tar.gz#sha256=' in html
    assert "data-dist-info-metadata" in html
    # an unknown project is an error, not an empty export
    assert cli(tmp_path, upstream, "export", str(dest), "--project", "exp-app") == 2
    assert "nothing of 'exp-app' is in the cache or the private store" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("team")
def test_export_of_requirements_installs_offline_and_from_a_static_server(
    tmp_path: Path, upstream: PrivateIndex, faults: Faults, capsys: pytest.CaptureFixture[str]
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("exp-app\n")
    dest = tmp_path / "air-gap"
    # a team config as deployed: the export's own mirror must send files itself all the same
    (tmp_path / "cli.yml").write_text("nestegg:\n  sendfile: x-accel-redirect\n  max_cache_size: 1k\n")

    assert cli(tmp_path, upstream, "export", str(dest), "--requirements", str(requirements)) == 0
    assert "exported 4 files of 4 projects" in capsys.readouterr().out
    exported = sorted(p.name for p in (dest / "files").iterdir() if not p.name.endswith(".metadata"))
    # exp-helper is no install requirement: only the build of exp-tool's sdist needs it
    assert exported == [
        "exp_app-1.0-py3-none-any.whl", "exp_helper-3.0-py3-none-any.whl",
        "exp_lib-2.0-py3-none-any.whl", "exp_tool-1.0.tar.gz",
    ]  # fmt: skip
    upstream.stop()  # air-gapped from here on

    offline = ("--no-index", "--find-links", str(dest / "files"))
    pip("install", *offline, "--target", str(tmp_path / "a"), "exp-app")
    assert (tmp_path / "a" / "exp_tool").is_dir()
    pip("install", "--target", str(tmp_path / "b"), "exp-app", index_url=(dest / "simple").as_uri() + "/")
    with static_server(dest) as url:
        pip(
            "install",
            "--no-cache-dir",
            "--target",
            str(tmp_path / "c"),
            "exp-app",
            index_url=f"{url}/simple/",
        )
    assert (tmp_path / "c" / "exp_lib").is_dir()


def _export_from(nest: Path, dest: Path, *args: str) -> int:
    """``nestegg export`` of the nest ``nest`` (no upstream asked) into ``dest``."""
    config = nest.parent / "nestegg.yml"
    config.write_text("nestegg: {}\n")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return main(
            ["--config", str(config), "--cache-dir", str(nest), "--offline", "export", str(dest), *args]
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.slow
def test_a_project_exported_again_from_another_index_is_that_exports_and_kept_metadata_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = {}
    for nest, version in (("team-a", "2.0"), ("team-b", "1.0")):
        store = PrivateStore(tmp_path / nest / "nest" / "private")
        spec = PackageSpec(name="exp-lib", version=version)
        wheel = make_wheel(spec, tmp_path / "dists" / nest)
        store.add(wheel)
        store.add(make_sdist(spec, tmp_path / "dists" / nest))
        wheels[nest] = wheel
    # team-b's metadata kept beside its wheel is not the one its page gives: it asks for a
    # project that is nowhere, and pip would resolve with it
    kept = tmp_path / "team-b" / "nest" / "private" / "exp-lib" / f"{wheels['team-b'].name}.metadata"
    own = kept.read_bytes()
    kept.write_bytes(own.replace(b"\n", b"\nRequires-Dist: not-anywhere\n", 1))
    dest = tmp_path / "air-gap"

    assert _export_from(tmp_path / "team-a" / "nest", dest, "--project", "exp-lib") == 0
    capsys.readouterr()
    assert _export_from(tmp_path / "team-b" / "nest", dest, "--project", "exp-lib") == 0
    err = capsys.readouterr().err
    assert f"removed {dest / 'files' / wheels['team-a'].name}: this export of exp-lib does not have it" in err
    assert f"removed {dest / 'files' / 'exp_lib-2.0.tar.gz'}" in err
    assert (
        f"not exporting the metadata kept of {wheels['team-b'].name}: its sha256 is not the one its page "
        "gives; the wheel's own is"
    ) in err
    assert sorted(p.name for p in (dest / "files").iterdir()) == [
        "exp_lib-1.0-py3-none-any.whl", "exp_lib-1.0-py3-none-any.whl.metadata", "exp_lib-1.0.tar.gz",
    ]  # fmt: skip
    assert (dest / "files" / f"{wheels['team-b'].name}.metadata").read_bytes() == own

    # pip finds what the pages list, whichever way it reads the export
    offline = ("--no-index", "--find-links", str(dest / "files"))
    pip("install", *offline, "--target", str(tmp_path / "a"), "exp-lib")
    pip("install", "--target", str(tmp_path / "b"), "exp-lib", index_url=(dest / "simple").as_uri() + "/")
    for target in ("a", "b"):
        assert [p.name for p in (tmp_path / target).glob("*.dist-info")] == ["exp_lib-1.0.dist-info"]


@pytest.mark.parametrize("inside", [".", "private", "mirror/anything"])
def test_an_export_into_the_nest_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inside: str
) -> None:
    nest = tmp_path / "nest"
    store = PrivateStore(nest / "private")
    store.add(make_wheel(PackageSpec(name="exp-lib", version="1.0"), tmp_path / "dists"))
    dest = nest / inside
    assert _export_from(nest, dest, "--project", "exp-lib") == 2
    assert capsys.readouterr().err == (
        f"error: cannot export into {str(dest)!r}: it is inside the nest {str(nest.resolve())!r}; "
        "name a folder outside it\n"
    )
    # its files/ and simple/ were no private projects of those names
    assert store.names() == ["exp-lib"]
    assert not (dest / "files").exists()


def test_an_export_cut_short_leaves_every_file_its_pages_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for nest, version in (("team-a", "2.0"), ("team-b", "1.0")):
        store = PrivateStore(tmp_path / nest / "nest" / "private")
        store.add(make_wheel(PackageSpec(name="exp-lib", version=version), tmp_path / "dists" / nest))
    dest = tmp_path / "air-gap"
    assert _export_from(tmp_path / "team-a" / "nest", dest, "--project", "exp-lib") == 0

    def cut_short(*args: object) -> bytes:
        raise KeyboardInterrupt

    # its files copied, its page not written yet: Ctrl-C
    monkeypatch.setattr("nestegg_core.cli.export.render_project", cut_short)
    assert _export_from(tmp_path / "team-b" / "nest", dest, "--project", "exp-lib") == 130
    for page in (dest / "simple").glob("*/index.json"):
        for entry in json.loads(page.read_text())["files"]:
            assert (dest / "files" / entry["filename"]).is_file()


@pytest.mark.parametrize(
    ("requirements", "message"),
    [
        ("missing.txt", "error: requirements file {path!r} does not exist\n"),
        (".", "error: requirements file {path!r} is not a file\n"),
    ],
)
def test_an_export_says_what_is_wrong_with_its_requirements_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], requirements: str, message: str
) -> None:
    path = str(tmp_path / requirements)
    assert _export_from(tmp_path / "nest", tmp_path / "out", "-r", path) == 2
    assert capsys.readouterr().err == message.format(path=path)


def test_an_export_says_what_it_did_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    PrivateStore(tmp_path / "nest" / "private").add(
        make_wheel(PackageSpec(name="exp-lib", version="1.0"), tmp_path / "dists")
    )
    assert _export_from(tmp_path / "nest", tmp_path / "out", "--project", "exp-lib") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"exported 1 files of 1 projects to {tmp_path / 'out'}\n")
    assert "exported" not in captured.err


def test_an_export_keeps_a_file_it_writes_whichever_projects_name_it_bears(tmp_path: Path) -> None:
    nest, upstream = tmp_path / "nest", "http://127.0.0.1:9/simple/"
    PrivateStore(nest / "private").add(make_wheel(PackageSpec(name="exp-lib", version="1.0"), tmp_path / "d"))
    # an upstream's page of "odd" listed a file named as exp-lib's, and it was cached
    store = CacheStore(nest, upstream)
    odd, data = NormalizedName("odd"), b"an sdist of odd's"
    store.file_path(odd, "exp_lib-9.0.tar.gz").parent.mkdir(parents=True)
    store.file_path(odd, "exp_lib-9.0.tar.gz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    store.write_record(
        odd,
        DistFile(
            filename="exp_lib-9.0.tar.gz",
            url="https://example.com/x",
            hashes={"sha256": digest},
            size=len(data),
        ),
    )
    dest = tmp_path / "air-gap"
    assert _export_from(nest, dest, "--index-url", upstream) == 0
    listed = json.loads((dest / "simple" / "odd" / "index.json").read_text())["files"]
    assert [entry["filename"] for entry in listed] == ["exp_lib-9.0.tar.gz"]
    assert (dest / "files" / "exp_lib-9.0.tar.gz").read_bytes() == data


def _cache_of_odd(nest: Path, upstream: str, tmp_path: Path) -> Path:
    """A nest with a private exp-lib 1.0 and a cached project 'odd' whose upstream page listed a
    wheel named as exp-lib's (9.0): the wheel."""
    PrivateStore(nest / "private").add(make_wheel(PackageSpec(name="exp-lib", version="1.0"), tmp_path / "d"))
    store, odd = CacheStore(nest, upstream), NormalizedName("odd")
    wheel = make_wheel(PackageSpec(name="exp-lib", version="9.0"), tmp_path / "odd")
    store.file_path(odd, wheel.name).parent.mkdir(parents=True)
    store.file_path(odd, wheel.name).write_bytes(wheel.read_bytes())
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    store.write_record(odd, DistFile(filename=wheel.name, url="https://example.com/x",
                                     hashes={"sha256": digest}, size=wheel.stat().st_size))  # fmt: skip
    return wheel


@pytest.mark.slow
@pytest.mark.parametrize(
    "exports",
    [
        # odd's page lists a file named as exp-lib's; exp-lib's own never did
        [("nest", ()), ("nest", ("--project", "exp-lib"))],
        # exp-lib's earlier page listed it too, and odd's export wrote it again
        [
            ("team", ("--project", "exp-lib")),
            ("nest", ("--project", "odd")),
            ("nest", ("--project", "exp-lib")),
        ],
    ],
)
def test_an_export_again_of_one_project_keeps_a_file_another_projects_page_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exports: list[tuple[str, tuple[str, ...]]]
) -> None:
    upstream = "http://127.0.0.1:9/simple/"
    wheel = _cache_of_odd(tmp_path / "nest" / "nest", upstream, tmp_path)
    PrivateStore(tmp_path / "team" / "nest" / "private").add(wheel)  # the same exp-lib 9.0
    dest = tmp_path / "air-gap"
    for nest, args in exports:
        assert _export_from(tmp_path / nest / "nest", dest, "--index-url", upstream, *args) == 0
    assert "this export of" not in capsys.readouterr().err  # nothing removed
    assert json.loads((dest / "simple" / "exp-lib" / "index.json").read_text())["files"][0]["filename"] == (
        "exp_lib-1.0-py3-none-any.whl"
    )
    listed = json.loads((dest / "simple" / "odd" / "index.json").read_text())["files"]
    assert [entry["filename"] for entry in listed] == [wheel.name]
    exported = (dest / "files" / wheel.name).read_bytes()
    assert hashlib.sha256(exported).hexdigest() == listed[0]["hashes"]["sha256"]
    # --find-links finds every file a page lists
    pip("install", "--no-index", "--find-links", str(dest / "files"), "--target", str(tmp_path / "a"),
        "exp-lib==9.0")  # fmt: skip
    assert [p.name for p in (tmp_path / "a").glob("*.dist-info")] == ["exp_lib-9.0.dist-info"]


@pytest.mark.slow
def test_an_export_removes_only_files_an_export_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for nest, version in (("team-a", "1.0"), ("team-b", "2.0")):
        spec = PackageSpec(name="exp-lib", version=version)
        PrivateStore(tmp_path / nest / "nest" / "private").add(make_wheel(spec, tmp_path / "dists" / nest))
    dest = tmp_path / "usb"
    # the user's own, as ``pip download -d usb/files exp-lib==0.5 other-lib`` would put them
    mine = [
        make_wheel(PackageSpec(name=n, version="0.5"), tmp_path / "mine") for n in ("exp-lib", "other-lib")
    ]
    (dest / "files").mkdir(parents=True)
    for wheel in mine:
        (dest / "files" / wheel.name).write_bytes(wheel.read_bytes())

    assert _export_from(tmp_path / "team-a" / "nest", dest, "--project", "exp-lib") == 0  # the first
    assert "removed" not in capsys.readouterr().err
    assert _export_from(tmp_path / "team-b" / "nest", dest, "--project", "exp-lib") == 0  # exp-lib again
    err = capsys.readouterr().err
    assert f"removed {dest / 'files' / 'exp_lib-1.0-py3-none-any.whl'}: this export of exp-lib" in err
    assert err.count("removed") == 1
    assert sorted(p.name for p in (dest / "files").glob("*.whl")) == [
        "exp_lib-0.5-py3-none-any.whl", "exp_lib-2.0-py3-none-any.whl", "other_lib-0.5-py3-none-any.whl",
    ]  # fmt: skip
    # the user's wheel is still there for --find-links; the index lists the export's
    pip("install", "--no-index", "--find-links", str(dest / "files"), "--target", str(tmp_path / "a"),
        "exp-lib==0.5")  # fmt: skip
    pip("install", "--target", str(tmp_path / "b"), "exp-lib", index_url=(dest / "simple").as_uri() + "/")
    for target, version in (("a", "0.5"), ("b", "2.0")):
        assert [p.name for p in (tmp_path / target).glob("*.dist-info")] == [f"exp_lib-{version}.dist-info"]


@pytest.mark.slow
def test_an_export_cut_short_before_its_pages_leaves_no_file_the_next_does_not_know_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for nest, version in (("team-a", "2.0"), ("team-b", "1.0")):
        store = PrivateStore(tmp_path / nest / "nest" / "private")
        store.add(make_wheel(PackageSpec(name="exp-lib", version=version), tmp_path / "dists" / nest))
    dest = tmp_path / "air-gap"

    def cut_short(*args: object) -> bytes:
        raise KeyboardInterrupt

    # the first export into dest: its file copied, no page written yet: Ctrl-C
    with monkeypatch.context() as patch:
        patch.setattr("nestegg_core.cli.export.render_project", cut_short)
        assert _export_from(tmp_path / "team-a" / "nest", dest, "--project", "exp-lib") == 130
    assert (dest / "files" / "exp_lib-2.0-py3-none-any.whl").is_file()
    assert not (dest / "simple").exists()
    # its manifest says whose it is: the next export of exp-lib removes it
    assert _export_from(tmp_path / "team-b" / "nest", dest, "--project", "exp-lib") == 0
    assert f"removed {dest / 'files' / 'exp_lib-2.0-py3-none-any.whl'}" in capsys.readouterr().err
    pip(
        "install",
        "--no-index",
        "--find-links",
        str(dest / "files"),
        "--target",
        str(tmp_path / "a"),
        "exp-lib",
    )
    assert [p.name for p in (tmp_path / "a").glob("*.dist-info")] == ["exp_lib-1.0.dist-info"]


@pytest.mark.parametrize(
    ("manifest", "warning"),
    [
        (b"{not json", "Expecting property name"),
        (b'{"files": ["exp_lib-0.5-py3-none-any.whl"]}', "'files' is no mapping: list"),
        # an entry of no canonical project name, or no distribution's filename, is left aside
        (b'{"files": {"exp_lib-0.5-py3-none-any.whl": "Exp_Lib"}}', None),
        (b'{"files": {"../exp_lib-0.5-py3-none-any.whl": "exp-lib"}}', None),
    ],
)
def test_an_export_says_its_manifest_is_damaged_and_removes_no_file_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: bytes, warning: str | None
) -> None:
    nest = tmp_path / "nest"
    PrivateStore(nest / "private").add(make_wheel(PackageSpec(name="exp-lib", version="1.0"), tmp_path / "d"))
    dest = tmp_path / "usb"
    (dest / "files").mkdir(parents=True)
    mine = make_wheel(PackageSpec(name="exp-lib", version="0.5"), dest / "files")
    (tmp_path / mine.name).write_bytes(mine.read_bytes())  # what the '../' entry would name
    (dest / ".nestegg-export.json").write_bytes(manifest)
    assert _export_from(nest, dest, "--project", "exp-lib") == 0
    err = capsys.readouterr().err
    assert "this export of" not in err  # no file removed
    assert mine.is_file()
    assert (tmp_path / mine.name).is_file()
    if warning is not None:
        assert (
            f"not reading {dest / '.nestegg-export.json'} (only files the exported pages list are removed)"
            in err
        )
        assert warning in err
    # the manifest is whole again, with the export's own file alone
    written = json.loads((dest / ".nestegg-export.json").read_text())
    assert written == {"files": {"exp_lib-1.0-py3-none-any.whl": "exp-lib"}}


@pytest.mark.parametrize(
    ("planted", "warning"),
    [
        # the manifest gives another project's file to the project exported
        ({".nestegg-export.json": b'{"files": {"bar-1.0-py3-none-any.whl": "exp-lib"}}'}, None),
        # so does a page left in DEST
        ({"simple/exp-lib/index.json": b'{"files": [{"filename": "bar-1.0-py3-none-any.whl"}]}'}, None),
        # a page nested past Python's recursion limit: a traceback before
        ({"simple/exp-lib/index.json": b"[" * 100_000 + b"]" * 100_000}, "not reading the page exported"),
    ],
)
def test_an_export_removes_no_file_of_another_project_whatever_dest_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], planted: dict[str, bytes], warning: str | None
) -> None:
    nest = tmp_path / "nest"
    PrivateStore(nest / "private").add(make_wheel(PackageSpec(name="exp-lib", version="1.0"), tmp_path / "d"))
    dest = tmp_path / "usb"
    (dest / "files").mkdir(parents=True)
    theirs = make_wheel(PackageSpec(name="bar", version="1.0"), dest / "files")
    for path, body in planted.items():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(body)
    assert _export_from(nest, dest, "--project", "exp-lib") == 0
    err = capsys.readouterr().err
    assert "removed" not in err
    assert theirs.is_file()
    assert warning is None or warning in err


def test_an_export_reads_a_cached_projects_page_state_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nest, upstream, name = tmp_path / "nest", "http://127.0.0.1:9/simple/", NormalizedName("exp-lib")
    store = CacheStore(nest, upstream)
    files = []
    for version in ("1.0", "2.0", "3.0"):
        wheel = make_wheel(PackageSpec(name="exp-lib", version=version), tmp_path / "d")
        store.file_path(name, wheel.name).parent.mkdir(parents=True, exist_ok=True)
        store.file_path(name, wheel.name).write_bytes(wheel.read_bytes())
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        dist = DistFile(filename=wheel.name, url=f"https://example.com/{wheel.name}",
                        hashes={"sha256": digest}, size=wheel.stat().st_size,
                        core_metadata={"sha256": "0" * 64})  # fmt: skip
        store.write_record(name, dist)
        files.append(dist)
    store.write_page(PageState(page=ProjectPage.build(name, files)))
    reads: list[str] = []
    for method in ("read_page", "read_page_entry"):
        original = getattr(CacheStore, method)

        def counted(
            self: CacheStore, *args: object, _original: object = original, _method: str = method
        ) -> object:
            reads.append(_method)
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(CacheStore, method, counted)
    assert _export_from(nest, tmp_path / "out", "--index-url", upstream, "--project", "exp-lib") == 0
    assert len(reads) == 1, reads
    # each wheel's kept metadata was checked against the hash the page gives (no file kept: its own)
    listed = json.loads((tmp_path / "out" / "simple" / "exp-lib" / "index.json").read_text())["files"]
    assert [entry["filename"] for entry in listed] == [dist.filename for dist in files]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "say what to prune: --max-size SIZE, --older-than DAYS, or max_cache_size in the config"),
        (["--max-size", "0"], "--max-size: expected a size like 500M or 20G (K, M, G, T), got '0'"),
        (["--max-size", "5X"], "--max-size: expected a size like 500M or 20G (K, M, G, T), got '5X'"),
        (["--older-than", "-1"], "--older-than: expected a number of days >= 0, got -1.0"),
        (["--older-than", "nan"], "--older-than: expected a number of days >= 0, got nan"),
    ],
)
def test_prune_says_what_is_wrong_in_one_line(
    tmp_path: Path, upstream: PrivateIndex, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli(tmp_path, upstream, "prune", *args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_pip_arg_without_requirements_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--project", "exp-lib", "--pip-arg=--platform=manylinux2014_x86_64")
    assert _export_from(tmp_path / "nest", tmp_path / "out", *args) == 2
    assert capsys.readouterr().err == (
        "error: --pip-arg '--platform=manylinux2014_x86_64': it is for the pip that resolves "
        "--requirements FILE\n"
    )
    assert not (tmp_path / "out").exists()
