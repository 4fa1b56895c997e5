"""Generated wheels and sdists: names, metadata, RECORD, determinism, and real installs."""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.metadata import Metadata
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from nestegg_core.testing import find_uv, installer_env, make_venv, sdist_backend
from nestegg_core.testing.dists import (
    PAYLOAD_NAME,
    PackageSpec,
    backend_source,
    core_metadata,
    make_sdist,
    make_wheel,
    sdist_filename,
    wheel_filename,
)

Maker = Callable[[PackageSpec, Path], Path]

FULL = PackageSpec(
    name="My_Pkg.Name",
    version="1.0.0.post1",
    requires_dist=("dep-base>=2", "other; python_version >= '3'"),
    requires_python=">=3.8,<4",
    extras={"Fancy_X": ("extra-dep>=0.5",), "tls": ("certy; sys_platform != 'win32' or os_name == 'nt'",)},
    summary="A generated package",
    files={"sub/__init__.py": "", "sub/mod.py": "VALUE = 42\n", "data.txt": "héllo\n"},
    payload_size=70_000,
)


@pytest.mark.parametrize(
    ("name", "version", "tag", "wheel", "sdist"),
    [
        ("My_Pkg.Name", "1.0", "py3-none-any", "my_pkg_name-1.0-py3-none-any.whl", "my_pkg_name-1.0.tar.gz"),
        ("a-b", "1.0.0.post1", "py3-none-any", "a_b-1.0.0.post1-py3-none-any.whl", "a_b-1.0.0.post1.tar.gz"),
        ("A__B", "2.0a1", "py3-none-any", "a_b-2.0a1-py3-none-any.whl", "a_b-2.0a1.tar.gz"),
        ("pkg", "v1.0-BETA.2", "py3-none-any", "pkg-1.0b2-py3-none-any.whl", "pkg-1.0b2.tar.gz"),
        (
            "pkg",
            "1!2.0+local.7",
            "py3-none-any",
            "pkg-1!2.0+local.7-py3-none-any.whl",
            "pkg-1!2.0+local.7.tar.gz",
        ),
        ("x", "0.1", "py2.py3-none-any", "x-0.1-py2.py3-none-any.whl", "x-0.1.tar.gz"),
    ],
)
def test_filenames(name: str, version: str, tag: str, wheel: str, sdist: str) -> None:
    spec = PackageSpec(name=name, version=version, wheel_tag=tag)
    assert wheel_filename(spec) == wheel
    assert sdist_filename(spec) == sdist
    assert spec.import_name == canonicalize_name(name).replace("-", "_")
    # The current packaging parsers must read back what was meant.
    parsed_name, parsed_version, build, tags = parse_wheel_filename(wheel)
    assert (parsed_name, parsed_version, build) == (canonicalize_name(name), Version(version), ())
    assert {str(t) for t in tags} == {f"{i}-none-any" for i in tag.split("-", maxsplit=1)[0].split(".")}
    assert parse_sdist_filename(sdist) == (canonicalize_name(name), Version(version))


@pytest.mark.parametrize(
    ("kwargs", "lines"),
    [
        ({}, ["Metadata-Version: 2.1", "Name: Odd_Name.x", "Version: 1.0"]),
        ({"version": "01.0.POST1"}, ["Version: 1.0.post1"]),
        ({"summary": "Does things"}, ["Summary: Does things"]),
        ({"requires_python": ">=3.8, <4"}, ["Requires-Python: <4,>=3.8"]),
        ({"requires_dist": ("Dep_Base >= 2",)}, ["Requires-Dist: Dep_Base>=2"]),
        (
            {"requires_dist": ("dep[x]; python_version < '4'",)},
            ['Requires-Dist: dep[x]; python_version < "4"'],
        ),
        (
            {"extras": {"Fancy.X": ("extra-dep>=0.5", "b")}},
            [
                "Provides-Extra: fancy-x",
                'Requires-Dist: extra-dep>=0.5; extra == "fancy-x"',
                'Requires-Dist: b; extra == "fancy-x"',
            ],
        ),
        (
            {"extras": {"tls": ("c; os_name == 'nt' or sys_platform == 'win32'",)}},
            [
                "Provides-Extra: tls",
                'Requires-Dist: c; (os_name == "nt" or sys_platform == "win32") and extra == "tls"',
            ],
        ),
    ],
)
def test_metadata_fields(kwargs: dict[str, Any], lines: list[str]) -> None:
    spec = PackageSpec(**{"name": "Odd_Name.x", "version": "1.0", **kwargs})
    raw = core_metadata(spec)
    text = raw.decode()
    for line in lines:
        assert line in text.splitlines()
    # packaging's strict reader accepts it (names, versions, markers, extras all valid).
    meta = Metadata.from_email(raw, validate=True)
    assert meta.name == spec.name
    assert meta.version == Version(spec.version)


def test_extra_markers_select_only_their_extra() -> None:
    reqs = Metadata.from_email(core_metadata(FULL)).requires_dist or []
    env = {"python_version": "3.11", "sys_platform": "linux", "os_name": "posix"}

    def active(extra: str) -> set[str]:
        return {r.name for r in reqs if r.marker is None or r.marker.evaluate({**env, "extra": extra})}

    assert active("") == {"dep-base", "other"}
    assert active("fancy-x") == {"dep-base", "other", "extra-dep"}
    # The `or` in the original marker must not make certy leak into every install.
    assert active("tls") == {"dep-base", "other", "certy"}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_wheel_contents_and_record(tmp_path: Path) -> None:
    path = make_wheel(FULL, tmp_path / "new" / "dir")
    assert path == tmp_path / "new" / "dir" / "my_pkg_name-1.0.0.post1-py3-none-any.whl"
    dist_info = "my_pkg_name-1.0.0.post1.dist-info"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names == [
            "my_pkg_name/__init__.py",
            f"my_pkg_name/{PAYLOAD_NAME}",
            "my_pkg_name/data.txt",
            "my_pkg_name/sub/__init__.py",
            "my_pkg_name/sub/mod.py",
            f"{dist_info}/METADATA",
            f"{dist_info}/WHEEL",
            f"{dist_info}/RECORD",
        ]
        assert zf.read("my_pkg_name/__init__.py") == b'__version__ = "1.0.0.post1"\n'
        assert zf.read("my_pkg_name/data.txt") == "héllo\n".encode()
        assert len(zf.read(f"my_pkg_name/{PAYLOAD_NAME}")) == 70_000
        assert zf.read(f"{dist_info}/METADATA") == core_metadata(FULL)
        wheel = zf.read(f"{dist_info}/WHEEL").decode().splitlines()
        assert wheel == [
            "Wheel-Version: 1.0",
            "Generator: nestegg",
            "Root-Is-Purelib: true",
            "Tag: py3-none-any",
        ]
        rows = list(csv.reader(io.StringIO(zf.read(f"{dist_info}/RECORD").decode())))
        assert [row[0] for row in rows] == names
        assert rows[-1] == [f"{dist_info}/RECORD", "", ""]
        for arcname, digest, size in rows[:-1]:
            data = zf.read(arcname)
            assert (digest, int(size)) == (_record_hash(data), len(data)), arcname
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644


def test_platform_tag_is_not_purelib(tmp_path: Path) -> None:
    spec = PackageSpec(name="plat", version="1", wheel_tag="cp311-cp311-manylinux_2_17_x86_64")
    with zipfile.ZipFile(make_wheel(spec, tmp_path)) as zf:
        wheel = zf.read("plat-1.dist-info/WHEEL").decode()
    assert "Root-Is-Purelib: false\n" in wheel
    assert "Tag: cp311-cp311-manylinux_2_17_x86_64\n" in wheel


def test_sdist_contents(tmp_path: Path) -> None:
    path = make_sdist(FULL, tmp_path)
    assert path.name == "my_pkg_name-1.0.0.post1.tar.gz"
    raw = path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime
    root = "my_pkg_name-1.0.0.post1"
    with tarfile.open(path) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert set(members) >= {
            root,
            f"{root}/PKG-INFO",
            f"{root}/pyproject.toml",
            f"{root}/my_pkg_name/__init__.py",
            f"{root}/my_pkg_name/{PAYLOAD_NAME}",
            f"{root}/my_pkg_name/sub/mod.py",
        }
        assert all(name == root or name.startswith(f"{root}/") for name in members)
        assert list(members) == sorted(members)
        for member in members.values():
            assert (member.mtime, member.uid, member.gid, member.uname) == (315532800, 0, 0, "")
            assert member.mode == (0o755 if member.isdir() else 0o644)

        def read(name: str) -> bytes:
            extracted = tf.extractfile(members[f"{root}/{name}"])
            assert extracted is not None
            return extracted.read()

        assert read("PKG-INFO") == core_metadata(FULL)
        pyproject = read("pyproject.toml").decode().splitlines()
        assert "[build-system]" in pyproject
        assert "requires = []" in pyproject
        assert any(line.startswith("backend-path = [") for line in pyproject)
        assert read("my_pkg_name/sub/mod.py") == b"VALUE = 42\n"


@pytest.mark.parametrize("make", [make_wheel, make_sdist])
def test_deterministic(make: Maker, tmp_path: Path) -> None:
    first = make(FULL, tmp_path / "one").read_bytes()
    assert make(FULL, tmp_path / "two").read_bytes() == first
    # An equal spec built from differently ordered mappings gives the same bytes too.
    reordered = PackageSpec(
        name=FULL.name,
        version=FULL.version,
        requires_dist=list(FULL.requires_dist),  # type: ignore[arg-type]
        requires_python=FULL.requires_python,
        extras=dict(reversed(list(FULL.extras.items()))),
        summary=FULL.summary,
        files=dict(reversed(list(FULL.files.items()))),
        payload_size=FULL.payload_size,
    )
    assert reordered == FULL
    assert hash(reordered) == hash(FULL)
    assert make(reordered, tmp_path / "three").read_bytes() == first
    # ...and rewriting over an existing file is fine.
    assert make(FULL, tmp_path / "one").read_bytes() == first
    assert [p.name for p in (tmp_path / "one").iterdir()] == [make(FULL, tmp_path / "one").name]


def test_payload_differs_per_package(tmp_path: Path) -> None:
    def payload(name: str) -> bytes:
        spec = PackageSpec(name=name, version="1", payload_size=4096)
        with zipfile.ZipFile(make_wheel(spec, tmp_path)) as zf:
            return zf.read(f"{spec.import_name}/{PAYLOAD_NAME}")

    assert payload("one") != payload("two")


def test_spec_is_frozen() -> None:
    files = {"a.py": "A = 1\n"}
    extras: dict[str, tuple[str, ...]] = {"x": ("dep",)}
    spec = PackageSpec(name="frozen", version="1", files=files, extras=extras)
    files["b.py"] = ""
    extras["y"] = ()
    assert dict(spec.files) == {"a.py": "A = 1\n"}
    assert dict(spec.extras) == {"x": ("dep",)}
    with pytest.raises(TypeError):
        spec.files["c.py"] = ""  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value", "bad"),
    [
        ("name", "", ""),
        ("name", "-leading-dash", "-leading-dash"),
        ("name", "has space", "has space"),
        ("name", "trailing.", "trailing."),
        ("version", "not-a-version", "not-a-version"),
        ("version", "", ""),
        ("requires_dist", ("good", "bad requirement !!"), "bad requirement !!"),
        ("requires_python", "=>3.8", "=>3.8"),
        ("requires_python", " ", " "),
        ("extras", {"bad extra": ()}, "bad extra"),
        ("extras", {"x": ("dep ; python_version >",)}, "dep ; python_version >"),
        ("extras", {"Dup": (), "dup": ()}, "dup"),
        ("summary", "two\nlines", "two\nlines"),
        ("files", {"../escape.py": ""}, "../escape.py"),
        ("files", {"/abs.py": ""}, "/abs.py"),
        ("files", {"a//b.py": ""}, "a//b.py"),
        ("files", {"win\\path.py": ""}, "win\\path.py"),
        ("files", {"__pycache__/x.py": ""}, "__pycache__/x.py"),
        ("files", {"mod.pyc": ""}, "mod.pyc"),
        ("files", {PAYLOAD_NAME: ""}, PAYLOAD_NAME),
        ("payload_size", -1, -1),
        ("wheel_tag", "py3-none", "py3-none"),
        ("wheel_tag", "py3--any", "py3--any"),
        ("wheel_tag", "py3-none-any-extra", "py3-none-any-extra"),
    ],
)
def test_invalid_spec_names_the_value(field: str, value: object, bad: object) -> None:
    kwargs: dict[str, Any] = {"name": "ok", "version": "1.0", field: value}
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        PackageSpec(**kwargs)


@pytest.mark.parametrize("field", ["requires_dist", "extras"])
def test_bare_string_requirements_rejected(field: str) -> None:
    value: object = "dep>=1" if field == "requires_dist" else {"x": "dep>=1"}
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(TypeError, match=re.escape("'dep>=1'")):
        PackageSpec(name="ok", version="1", **kwargs)


def test_large_payload_streams(tmp_path: Path) -> None:
    size = 16 * 1024 * 1024
    spec = PackageSpec(name="big", version="1", payload_size=size)
    tracemalloc.start()
    try:
        wheel = make_wheel(spec, tmp_path)
        sdist = make_sdist(spec, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Chunks stream through: never the whole payload in memory, let alone twice.
    assert peak < size // 4
    # Incompressible, so both archives are at least as big as the payload.
    assert wheel.stat().st_size > size
    assert sdist.stat().st_size > size


def _find_python38() -> str | None:
    candidates = [shutil.which("python3.8")]
    pyenv_root = os.environ.get("PYENV_ROOT")
    if pyenv_root:
        candidates += [str(p) for p in sorted(Path(pyenv_root).glob("versions/3.8*/bin/python3.8"))]
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


# Drives the in-tree backend the way a PEP 517 frontend does: read pyproject.toml, put
# backend-path first on sys.path, import build-backend, call the hooks from the tree root.
_FRONTEND = """
import json, os, sys
out, meta = sys.argv[1], sys.argv[2]
with open("pyproject.toml") as f:
    text = f.read()
backend = text.split('build-backend = "')[1].split('"')[0]
path = text.split('backend-path = ["')[1].split('"')[0]
sys.path.insert(0, os.path.abspath(path))
hooks = __import__(backend)
print(json.dumps([
    hooks.get_requires_for_build_wheel(),
    hooks.get_requires_for_build_sdist({}),
    hooks.prepare_metadata_for_build_wheel(meta),
    hooks.build_wheel(out),
    hooks.build_sdist(out),
]))
"""


def _zip_contents(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(name, zf.read(name)) for name in zf.namelist()]


def _tar_contents(path: Path) -> list[tuple[str, bytes | None]]:
    with tarfile.open(path) as tf:
        contents: list[tuple[str, bytes | None]] = []
        for member in tf.getmembers():
            extracted = tf.extractfile(member)
            contents.append((member.name, None if extracted is None else extracted.read()))
        return contents


@pytest.mark.parametrize("interpreter", ["current", "3.8"])
def test_in_tree_backend_rebuilds_the_same_dists(interpreter: str, tmp_path: Path) -> None:
    python = sys.executable if interpreter == "current" else _find_python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter here")
    sdist = make_sdist(FULL, tmp_path / "sdist")
    wheel = make_wheel(FULL, tmp_path / "wheel")
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "src", filter="data")
    tree = tmp_path / "src" / "my_pkg_name-1.0.0.post1"
    out, meta = tmp_path / "out", tmp_path / "meta"
    out.mkdir()
    meta.mkdir()
    result = subprocess.run(
        [python, "-c", _FRONTEND, str(out), str(meta)],
        cwd=tree,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},  # a stray __pycache__ must not leak in
        capture_output=True,
        text=True,
        check=True,
    )
    hook_results = json.loads(result.stdout)
    assert hook_results == [[], [], "my_pkg_name-1.0.0.post1.dist-info", wheel.name, sdist.name]
    dist_info = meta / "my_pkg_name-1.0.0.post1.dist-info"
    assert (dist_info / "METADATA").read_bytes() == core_metadata(FULL)
    with zipfile.ZipFile(wheel) as zf:
        assert (dist_info / "WHEEL").read_bytes() == zf.read(f"{dist_info.name}/WHEEL")
    if interpreter == "current":
        assert (out / wheel.name).read_bytes() == wheel.read_bytes()
        assert (out / sdist.name).read_bytes() == sdist.read_bytes()
    else:
        # Other Pythons' tarfile/zipfile may lay out headers differently; content must match.
        assert _zip_contents(out / wheel.name) == _zip_contents(wheel)
        assert _tar_contents(out / sdist.name) == _tar_contents(sdist)


# --- end to end with real installers --------------------------------------------------------

DEP_OLD = PackageSpec(name="Dep.Base", version="1.0")
DEP = PackageSpec(name="Dep.Base", version="2.0", payload_size=4096)
EXTRA_DEP = PackageSpec(name="extra_dep", version="0.5")
TOP = PackageSpec(
    name="Top_Pkg",
    version="1.0.post1",
    requires_dist=("dep-base>=2",),
    extras={"fancy": ("extra-dep>=0.5",)},
    files={"cli.py": "from top_pkg import __version__\n"},
)

_CHECK = f"""
import importlib.metadata as md, json, os
import top_pkg, top_pkg.cli, dep_base, extra_dep
print(json.dumps({{
    "versions": [top_pkg.__version__, dep_base.__version__, extra_dep.__version__],
    "name": md.metadata("top-pkg")["Name"],
    "payload": os.path.getsize(os.path.join(os.path.dirname(dep_base.__file__), "{PAYLOAD_NAME}")),
    "installer": md.distribution("top-pkg").read_text("INSTALLER").strip(),
}}))
"""


@pytest.fixture(scope="module")
def find_links(tmp_path_factory: pytest.TempPathFactory) -> Path:
    links = tmp_path_factory.mktemp("links")
    make_wheel(DEP_OLD, links)
    make_wheel(DEP, links)
    make_wheel(EXTRA_DEP, links)
    # Only an sdist of the top package: installing it proves the in-tree backend builds.
    make_sdist(TOP, links)
    return links


# The find-links directory goes last; the requirement asks for the extra.
_OFFLINE = ("top-pkg[fancy]", "--no-index", "--find-links")


def _installed(python: Path, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run([str(python), "-c", _CHECK], env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def _install(cmd: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
def test_pip_installs_generated_sdist_and_wheels(find_links: Path, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    env = installer_env()
    _install(
        [str(python), "-m", "pip", "install", "--no-cache-dir", *_OFFLINE, str(find_links)],
        env,
    )
    assert _installed(python, env) == {
        "versions": ["1.0.post1", "2.0", "0.5"],
        "name": "Top_Pkg",
        "payload": 4096,
        "installer": "pip",
    }


@pytest.mark.slow
def test_uv_installs_generated_sdist_and_wheels(find_links: Path, tmp_path: Path) -> None:
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    python = make_venv(tmp_path / "venv")
    env = installer_env(UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    _install(
        [uv, "pip", "install", "--python", str(python), *_OFFLINE, str(find_links)],
        env,
    )
    assert _installed(python, env) == {
        "versions": ["1.0.post1", "2.0", "0.5"],
        "name": "Top_Pkg",
        "payload": 4096,
        "installer": "uv",
    }


def test_the_backend_an_sdist_carries_is_python_3_8_and_the_module_itself() -> None:
    source = backend_source()
    ast.parse(source, feature_version=(3, 8))  # it runs wherever an installer may build
    assert source == Path(sdist_backend.__file__).read_bytes()
