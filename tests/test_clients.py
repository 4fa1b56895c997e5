"""Pages trimmed to the files pip can use (``compatible_only``): the rules, then real pip and uv."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging import tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from nestegg_core.cli import build_parser, config_from
from nestegg_core.config.config import Upstream, load_config
from nestegg_core.errors import ConfigError
from nestegg_core.simple.clients import (
    UNKNOWN,
    ClientProfile,
    answered_before_writing,
    fits,
    for_pip,
    lists_cached_metadata,
    marker_environment,
    pip_installs_from,
    pip_lists_metadata,
    profile_from_user_agent,
)
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.simple.render import HTML_V1, JSON_V1
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import MirrorFactory


def pip_agent(**data: object) -> str:
    base: dict[str, object] = {
        "installer": {"name": "pip", "version": "26.0"},
        "python": "3.11.7",
        "implementation": {"name": "CPython", "version": "3.11.7"},
        "distro": {"name": "Debian GNU/Linux", "libc": {"lib": "glibc", "version": "2.36"}},
        "system": {"name": "Linux", "release": "6.1.0"},
        "cpu": "x86_64",
    }
    base.update(data)
    return "pip/26.0 " + json.dumps(base)


LINUX = ClientProfile(implementation="CPython", python=Version("3.11"), system="Linux", cpu="x86_64",
                      glibc=(2, 36))  # fmt: skip


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (pip_agent(), LINUX),
        (pip_agent(python="3.14.0rc1"), ClientProfile(implementation="CPython", python=Version("3.14"),
                                                      system="Linux", cpu="x86_64", glibc=(2, 36))),
        (pip_agent(distro={"name": "Alpine Linux"}), ClientProfile(implementation="CPython",
                                                                   python=Version("3.11"), system="Linux",
                                                                   cpu="x86_64")),
        (pip_agent(system={"name": "Darwin"}, cpu="arm64", distro={"name": "macOS", "version": "14.5"}),
         ClientProfile(implementation="CPython", python=Version("3.11"), system="Darwin", cpu="arm64")),
        (pip_agent(implementation={"name": "PyPy", "version": "7.3.17"}, system=None, cpu=None,
                   distro=None),
         ClientProfile(implementation="PyPy", python=Version("3.11"))),
        # the bounded form: one profile for every value the rules do not know
        (pip_agent(python="3.11.2"), LINUX),
        (pip_agent(cpu="x" + "f" * 16), ClientProfile(implementation="CPython", python=Version("3.11"),
                                                      system="Linux", glibc=(2, 36))),
        (pip_agent(cpu=["x86_64"]), ClientProfile(implementation="CPython", python=Version("3.11"),
                                                  system="Linux", glibc=(2, 36))),
        (pip_agent(system={"name": "Darwin"}, cpu="AMD64", distro=None),  # Windows's name for it
         ClientProfile(implementation="CPython", python=Version("3.11"), system="Darwin")),
        (pip_agent(system={"name": "Plan 9"}),
         ClientProfile(implementation="CPython", python=Version("3.11"))),
        (pip_agent(implementation={"name": "GraalVM"}), ClientProfile(implementation=UNKNOWN,
                                                                      python=Version("3.11"), system="Linux",
                                                                      cpu="x86_64", glibc=(2, 36))),
        (pip_agent(distro={"libc": {"lib": "glibc", "version": "2.1000"}}),
         ClientProfile(implementation="CPython", python=Version("3.11"), system="Linux", cpu="x86_64")),
        (pip_agent(distro={"libc": {"lib": "glibc", "version": "3.1"}}),
         ClientProfile(implementation="CPython", python=Version("3.11"), system="Linux", cpu="x86_64")),
        (pip_agent(python="3.100"), None),  # a Python out of range: no profile, every file
        (pip_agent(python="9.0"), None),
        (pip_agent(python="1.6"), None),
        ("pip/26.0 " + "[" * 4000, None),
        ("uv/0.9.0 " + json.dumps({"installer": {"name": "uv"}, "python": "3.11.7"}), None),
        ("pip/26.0", None),
        ("pip/26.0 {not json", None),
        ("pip/26.0 " + json.dumps({"python": "3.11"}), None),  # no implementation
        ("pip/26.0 " + json.dumps({"python": "three", "implementation": {"name": "CPython"}}), None),
        ("pip/26.0 " + json.dumps(["a list"]), None),
        ("pip/26.0 " + "x" * 5000, None),
        ("curl/8.0", None),
        (None, None),
    ],
)  # fmt: skip
def test_profile_from_user_agent(agent: str | None, expected: ClientProfile | None) -> None:
    assert profile_from_user_agent(agent) == expected


def wheel(tag: str, requires_python: str | None = None) -> DistFile:
    return DistFile(filename=f"demo-1.0-{tag}.whl", requires_python=requires_python)


@pytest.mark.parametrize(
    ("filename", "requires_python", "kept"),
    [
        ("demo-1.0-py3-none-any.whl", None, True),
        ("demo-1.0-py2.py3-none-any.whl", None, True),
        ("demo-1.0-py2-none-any.whl", None, False),
        ("demo-1.0-py312-none-any.whl", None, False),
        ("demo-1.0-py310-none-any.whl", None, True),
        ("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", None, True),
        ("demo-1.0-cp311-cp311-manylinux_2_38_x86_64.whl", None, False),  # needs a newer glibc
        ("demo-1.0-cp311-cp311-manylinux1_i686.whl", None, True),  # a 32-bit interpreter may ask
        ("demo-1.0-cp311-cp311-manylinux2014_aarch64.whl", None, False),
        ("demo-1.0-cp311-cp311-musllinux_1_1_x86_64.whl", None, False),  # glibc system
        ("demo-1.0-cp311-cp311-linux_x86_64.whl", None, True),
        ("demo-1.0-cp311-cp311-linux_riscv64.whl", None, False),
        ("demo-1.0-cp311-cp311-linux_loongarch64.whl", None, True),  # unknown processor: kept
        ("demo-1.0-cp311-cp311-win_amd64.whl", None, False),
        ("demo-1.0-cp311-cp311-macosx_10_9_x86_64.whl", None, False),
        ("demo-1.0-cp311-cp311-freebsd_14_0_amd64.whl", None, True),  # unknown system: kept
        ("demo-1.0-cp310-cp310-manylinux_2_17_x86_64.whl", None, False),
        ("demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", None, False),
        ("demo-1.0-cp38-abi3-manylinux_2_17_x86_64.whl", None, True),
        ("demo-1.0-cp312-abi3-manylinux_2_17_x86_64.whl", None, False),
        ("demo-1.0-cp27-cp27mu-manylinux1_x86_64.whl", None, False),
        ("demo-1.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl", None, False),
        ("demo-1.0-graalpy311-graalpy242_311_native-manylinux_2_17_x86_64.whl", None, True),
        ("demo-1.0-1build-py3-none-any.whl", None, True),
        ("demo-1.0.tar.gz", None, True),
        ("demo-1.0.tar.gz", ">=3.12", False),
        ("demo-1.0.tar.gz", ">=3.8,<4", True),
        ("demo-1.0.tar.gz", "not a specifier", True),  # pip ignores it: so do we
        ("demo-1.0-py3-none-any.whl", "<3.11", False),
        # a profile knows the minor only: dropped when no 3.11.x could take it
        ("demo-1.0.tar.gz", ">=3.11.5", True),
        ("demo-1.0.tar.gz", ">3.11.99", True),
        ("demo-1.0.tar.gz", "==3.11.4", True),
        ("demo-1.0.tar.gz", ">=3.11.1,!=3.11.1,!=3.11.2,<3.11.4", True),  # 3.11.3
        ("demo-1.0.tar.gz", ">=3.11.1,!=3.11.1,!=3.11.2,<3.11.3", False),
        ("demo-1.0.tar.gz", "<3.11.0", False),
        ("demo-1.0.tar.gz", "!=3.11.*", False),
        ("demo-1.0.tar.gz", "~=3.10.2", False),
        ("demo-1.0.tar.gz", "~=3.11.2", True),
        ("demo.egg", None, True),
    ],
)  # fmt: skip
def test_fits_linux_cpython(filename: str, requires_python: str | None, kept: bool) -> None:
    assert fits(DistFile(filename=filename, requires_python=requires_python), LINUX) is kept


PYTHONS = ["py3", "py2.py3", "py2", "py39", "py313", "cp39", "cp311", "cp312", "cp313", "pp310", "pp311"]
ABIS = ["none", "abi3", "cp39", "cp311", "cp312", "cp313", "cp313t", "pypy310_pp73"]
PLATFORMS = [
    "any", "linux_x86_64", "linux_i686", "linux_aarch64", "linux_armv7l",
    "manylinux1_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_39_x86_64",
    "manylinux1_i686", "manylinux2014_aarch64", "manylinux_2_28_aarch64", "musllinux_1_2_x86_64",
    "musllinux_1_2_aarch64", "win_amd64", "win32", "win_arm64", "macosx_10_9_x86_64", "macosx_11_0_arm64",
    "macosx_10_9_universal2", "macosx_10_6_intel", "ios_13_0_arm64_iphoneos", "android_24_arm64_v8a",
]  # fmt: skip


def _linux_platforms(arch: str, glibc: tuple[int, int], *, musl: bool = False) -> list[str]:
    if musl:
        return [f"musllinux_1_{minor}_{arch}" for minor in range(2, -1, -1)] + [f"linux_{arch}"]
    found = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc[1], 4, -1)]
    found += [legacy for legacy, needed in (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5))
              if needed <= glibc[1]]  # fmt: skip
    return [p if p.startswith("manylinux_") else f"{p}_{arch}" for p in found] + [f"linux_{arch}"]


def _accepted(python: tuple[int, int], platforms: list[str], *, pypy: bool = False) -> set[tags.Tag]:
    """The tags pip would accept, from packaging's own rules for that interpreter and platform."""
    if pypy:
        interpreter = f"pp{python[0]}{python[1]}"
        found = set(tags.generic_tags(interpreter, [f"pypy{python[0]}{python[1]}_pp73", "none"], platforms))
    else:
        found = set(tags.cpython_tags(python, platforms=platforms))
        interpreter = f"cp{python[0]}{python[1]}"
    return found | set(tags.compatible_tags(python, interpreter, platforms))


# (profile, the platforms pip's tags would use on it): pip's User-Agent only tells the processor,
# so a 32-bit interpreter on a 64-bit system is a second platform list for the same profile
SYSTEMS = {
    "linux-x86_64-glibc": (
        ClientProfile(implementation="CPython", python=Version("3.11.2"), system="Linux", cpu="x86_64",
                      glibc=(2, 31)),
        [_linux_platforms("x86_64", (2, 31)), _linux_platforms("i686", (2, 31))],
    ),
    "linux-aarch64-musl": (
        ClientProfile(implementation="CPython", python=Version("3.12.1"), system="Linux", cpu="aarch64"),
        [_linux_platforms("aarch64", (0, 0), musl=True), _linux_platforms("armv7l", (0, 0), musl=True)],
    ),
    "macos-arm64": (
        ClientProfile(implementation="CPython", python=Version("3.13.0"), system="Darwin", cpu="arm64"),
        [list(tags.mac_platforms((14, 0), "arm64"))],
    ),
    "macos-x86_64": (
        ClientProfile(implementation="CPython", python=Version("3.9.6"), system="Darwin", cpu="x86_64"),
        [list(tags.mac_platforms((12, 0), "x86_64"))],
    ),
    "windows-amd64": (
        ClientProfile(implementation="CPython", python=Version("3.11.9"), system="Windows", cpu="AMD64"),
        [["win_amd64"], ["win32"]],
    ),
    "pypy-linux": (
        ClientProfile(implementation="PyPy", python=Version("3.10.14"), system="Linux", cpu="x86_64",
                      glibc=(2, 35)),
        [_linux_platforms("x86_64", (2, 35))],
    ),
}  # fmt: skip


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_no_wheel_pip_accepts_is_dropped(system: str) -> None:
    profile, platform_lists = SYSTEMS[system]
    python = profile.major_minor
    accepted: set[tags.Tag] = set()
    for platforms in platform_lists:
        accepted |= _accepted(python, platforms, pypy=profile.implementation == "PyPy")
    kept = dropped = 0
    for python_tag, abi, platform in itertools.product(PYTHONS, ABIS, PLATFORMS):
        filename = f"demo-1.0-{python_tag}-{abi}-{platform}.whl"
        usable = not parse_wheel_filename(filename)[3].isdisjoint(accepted)
        keeps = fits(DistFile(filename=filename), profile)
        assert keeps or not usable, f"{filename} dropped, but pip on {system} accepts it"
        kept += keeps
        dropped += not keeps
    # and the filter is worth having: most of the grid does not fit any one system
    assert dropped > 3 * kept


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """``handler`` answering on 127.0.0.1, a thread for each connection; the port, until stopped."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(5)


@pytest.fixture(scope="session")
def real_pip_agent(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The User-Agent this environment's pip sends, as a loopback index sees it (pip's own
    function for it is private API, and importing pip's internals warns on some versions)."""
    seen: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("User-Agent", ""))
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Recorder) as port:
        index = f"http://127.0.0.1:{port}/simple/"
        dest = str(tmp_path_factory.mktemp("agent"))
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                   "--retries", "0", "-d", dest, "no-such-project"]  # fmt: skip
        subprocess.run(command, env=installer_env(index), capture_output=True, check=False, timeout=120)
    assert seen, "pip asked the loopback index nothing"
    return seen[0]


def test_this_interpreter_and_its_pip(real_pip_agent: str) -> None:
    """The profile of the pip in this environment keeps every wheel this interpreter accepts."""
    profile = profile_from_user_agent(real_pip_agent)
    assert profile is not None
    assert profile.major_minor == sys.version_info[:2]
    for tag in itertools.islice(tags.sys_tags(), 400):
        filename = f"demo-1.0-{tag}.whl"
        assert fits(DistFile(filename=filename), profile), filename


@pytest.mark.parametrize(
    ("yaml", "argv", "expected"),
    [
        ("nestegg: {}", [], False),
        ("nestegg: {compatible_only: yes}", [], True),
        ("nestegg: {compatible-only: no}", ["serve", "--compatible-only"], True),
    ],
)
def test_switched_on_by_config_or_option(tmp_path: Path, yaml: str, argv: list[str], expected: bool) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(yaml)
    assert config_from(build_parser().parse_args(["--config", str(path), *argv])).compatible_only is expected


def test_a_bad_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text("nestegg: {compatible_only: sometimes}")
    with pytest.raises(ConfigError, match=r"nestegg\.compatible_only: expected yes/no"):
        load_config(path)


# end to end ---------------------------------------------------------------------------------

OTHER_TAGS = ["cp27-cp27mu-manylinux1_x86_64", "cp311-cp311-win_amd64", "cp312-cp312-macosx_11_0_arm64",
              "cp310-cp310-musllinux_1_1_aarch64", "py2-none-any"]  # fmt: skip


@pytest.fixture
def many_platforms(upstream: PrivateIndex) -> str:
    """``plat-pkg`` 1.0 with a wheel for every other platform and one for this interpreter."""
    for tag in OTHER_TAGS:
        upstream.add("plat-pkg", "1.0", wheel_tag=tag, sdist=False)
    upstream.add("plat-pkg", "0.9", requires_python=">=4", wheel=False)
    this = next(iter(tags.sys_tags()))
    upstream.add("plat-pkg", "1.0", wheel_tag=str(this))
    return f"plat_pkg-1.0-{this}.whl"


def _files(http: requests.Session, url: str, agent: str) -> list[str]:
    response = http.get(url, headers={"Accept": JSON_V1, "User-Agent": agent})
    response.raise_for_status()
    assert response.headers["Vary"] == "Accept, Accept-Encoding, User-Agent"
    return [f["filename"] for f in response.json()["files"]]


@pytest.mark.slow
def test_pip_sees_only_what_fits_uv_sees_everything(
    tmp_path: Path,
    make_mirror: MirrorFactory,
    many_platforms: str,
    http: requests.Session,
    real_pip_agent: str,
) -> None:
    mirror = make_mirror(compatible_only=True)
    page = f"{mirror.url}/simple/plat-pkg/"
    assert _files(http, page, real_pip_agent) == [many_platforms, "plat_pkg-1.0.tar.gz"]
    assert len(_files(http, page, "uv/0.9.0 {}")) == len(OTHER_TAGS) + 3

    # real pip downloads the wheel that fits, as it does from the whole page
    chosen = {}
    for name, url in (("trimmed", mirror.index_url), ("whole", make_mirror(port=0).index_url)):
        dest = tmp_path / name
        command = [sys.executable, "-m", "pip", "download", "--no-cache-dir", "-d", str(dest), "plat-pkg"]
        result = subprocess.run(command, env=installer_env(url), capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        chosen[name] = sorted(p.name for p in dest.iterdir())
    assert chosen["trimmed"] == chosen["whole"] == [many_platforms]

    # real uv, resolving for another platform, still finds its wheel through the same mirror
    uv = find_uv()
    assert uv is not None
    requirements = tmp_path / "req.in"
    requirements.write_text("plat-pkg==1.0\n")
    command = [uv, "pip", "compile", "--no-cache", "--python-platform", "windows", "--python-version", "3.11",
               "--only-binary", ":all:", "--no-header", str(requirements)]  # fmt: skip
    result = subprocess.run(
        command, env=installer_env(mirror.index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plat-pkg==1.0" in result.stdout


@pytest.mark.slow
def test_pip_in_a_venv_installs_through_a_trimmed_mirror(
    tmp_path: Path, make_mirror: MirrorFactory, many_platforms: str
) -> None:
    python = make_venv(tmp_path / "venv")
    mirror = make_mirror(compatible_only=True)
    command = [str(python), "-m", "pip", "install", "--no-cache-dir", "plat-pkg"]
    result = subprocess.run(
        command, env=installer_env(mirror.index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully installed plat-pkg-1.0" in result.stdout
    assert many_platforms in result.stdout


@pytest.mark.parametrize(
    ("user_agent", "lists"),
    [
        ('pip/26.3 {"installer":{"name":"pip","version":"26.3"},"python":"3.11.7"}', False),
        ("pip/9.0.1 CPython/3.6", False),
        ("uv/0.5.0", True),
        ("pdm/2.20 python-requests/2.32", True),
        ("python-requests/2.32.3", True),
        ("Mozilla/5.0 pip/26.3", True),
        ("", True),
        (None, True),
    ],
)
def test_lists_cached_metadata(user_agent: str | None, lists: bool) -> None:
    assert lists_cached_metadata(user_agent) is lists


MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("size", "ranged", "listed"),
    [
        (None, False, True),  # of unknown size: maybe large
        (None, True, True),
        (2 * MIB - 1, False, False),  # small: it comes whole at about the cost of its metadata
        (2 * MIB, False, True),  # the upstream's metadata: one request, as pip makes to the upstream
        (2 * MIB, True, False),  # read by ranges: round trips pip does not make to the upstream
        (16 * MIB - 1, True, False),
        (16 * MIB, True, True),  # large enough that a wheel pip rejects costs far more
    ],
)
def test_pip_lists_metadata(size: int | None, ranged: bool, listed: bool) -> None:
    dist = DistFile(filename="pkg-1.0-py3-none-any.whl", size=size)
    assert pip_lists_metadata(dist, ranged=ranged) is listed


@pytest.mark.parametrize(
    ("filename", "taken"),
    [
        ("pkg-1.0-py3-none-any.whl", True),
        ("pkg-1.0.tar.gz", True),
        ("pkg-1.0.zip", True),
        ("pkg-1.0.tgz", True),
        ("pkg-1.0.tar", True),
        ("pkg-1.0.tar.bz2", True),
        ("pkg-1.0.tbz", True),
        ("pkg-1.0.tar.xz", True),
        ("pkg-1.0.txz", True),
        ("pkg-1.0.tlz", True),
        ("pkg-1.0.tar.lz", True),
        ("pkg-1.0.tar.lzma", True),
        ("PKG-1.0.ZIP", True),  # pip reads the suffix as spelled: kept, in doubt
        ("pkg-1.0.TAR.GZ", True),
        ("pkg-1.0-py3.11.egg", False),
        ("pkg-1.0.win-amd64.exe", False),
        ("pkg-1.0.win32-py2.7.msi", False),
        ("pkg-1.0-1.noarch.rpm", False),
        ("pkg-1.0.macosx-10.6.dmg", False),
        ("pkg_1.0_all.deb", False),
        ("pkg-1.0.tar.Z", False),  # an archive pip does not unpack
    ],
)
def test_pip_installs_from(filename: str, taken: bool) -> None:
    assert pip_installs_from(DistFile(filename=filename)) is taken


def test_for_pip_drops_what_no_pip_takes_and_keeps_every_version() -> None:
    files = [DistFile(filename=f) for f in ("pkg-2.0-py3.11.egg", "pkg-1.0.tar.gz", "pkg-2.0.win32.exe")]
    page = ProjectPage.build("pkg", files, ["2.0", "1.0"])
    trimmed = for_pip(page)
    assert [d.filename for d in trimmed.files] == ["pkg-1.0.tar.gz"]
    assert trimmed.versions == page.versions == ("2.0", "1.0")
    whole = ProjectPage.build("pkg", files[1:2])
    assert for_pip(whole) is whole  # nothing to drop: no copy


#: what an old project's page still lists beside its wheel: files no pip takes, of a newer version
NOT_FOR_PIP = ("old_pkg-2.0-py3.11.egg", "old-pkg-2.0.win-amd64.exe", "old-pkg-2.0.tar.Z")


@pytest.fixture
def old_project(tmp_path: Path) -> Iterator[str]:
    """An upstream (http.server on 127.0.0.1) whose page of ``old-pkg`` lists a wheel of 1.0, and
    for 2.0 only an egg, a Windows installer and an archive pip cannot unpack. Its index URL."""
    wheel = make_wheel(PackageSpec(name="old-pkg", version="1.0"), tmp_path / "old-pkg")
    bodies = {wheel.name: wheel.read_bytes(), **dict.fromkeys(NOT_FOR_PIP, b"not for pip")}
    entries = [
        {"filename": name, "url": f"/files/{name}", "hashes": {"sha256": hashlib.sha256(body).hexdigest()}}
        for name, body in bodies.items()
    ]
    document = {
        "meta": {"api-version": "1.1"},
        "name": "old-pkg",
        "files": entries,
        "versions": ["1.0", "2.0"],
    }
    page = json.dumps(document).encode()

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/simple/old-pkg/":
                body, kind = page, JSON_V1
            elif self.path.startswith("/files/") and self.path[len("/files/") :] in bodies:
                body, kind = bodies[self.path[len("/files/") :]], "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Upstream) as port:
        yield f"http://127.0.0.1:{port}/simple/"


@pytest.mark.parametrize("routed", [False, True], ids=["mirrored", "routed"])
@pytest.mark.parametrize("accept", [JSON_V1, HTML_V1])
def test_pips_page_lists_no_file_pip_skips_the_others_list_all(
    make_mirror: MirrorFactory, old_project: str, http: requests.Session, accept: str, routed: bool
) -> None:
    if routed:  # the name's own index (``upstreams``), beside the default one: the same rules for pip
        mirror = make_mirror(upstreams=(Upstream(url=old_project, projects=("old-pkg",)),))
    else:
        mirror = make_mirror(index_url=old_project)
    url = f"{mirror.index_url}old-pkg/"
    found = {}
    for agent in (pip_agent(), "pip/9.0.1 CPython/3.6", "uv/0.13.9", "python-requests/2.32.3"):
        response = http.get(url, headers={"Accept": accept, "User-Agent": agent})
        response.raise_for_status()
        found[agent.split("/")[0], agent] = [n for n in (*NOT_FOR_PIP, "old_pkg-1.0") if n in response.text]
    for (client, _), names in found.items():
        assert names == (["old_pkg-1.0"] if client == "pip" else [*NOT_FOR_PIP, "old_pkg-1.0"]), client
    if accept == JSON_V1:  # every version is still listed (PEP 700), as to every other client
        pages = [
            http.get(url, headers={"Accept": accept, "User-Agent": a}).json()
            for a in (pip_agent(), "uv/0.13.9")
        ]
        assert pages[0]["versions"] == pages[1]["versions"] == ["1.0", "2.0"]
        # and pip's file URLs are whole, to the mirror it asked
        assert [f["url"] for f in pages[0]["files"]] == [
            f"{mirror.url}/files/old-pkg/old_pkg-1.0-py3-none-any.whl"
        ]


@pytest.mark.slow
def test_pip_never_sees_the_links_it_would_skip(
    tmp_path: Path, make_mirror: MirrorFactory, old_project: str
) -> None:
    """Real pip, verbose, through the mirror: it downloads the wheel and meets none of the other
    links (straight from the upstream it skips each, saying so)."""
    mirror = make_mirror(index_url=old_project)
    seen = {}
    for where, index in (("mirror", mirror.index_url), ("upstream", old_project)):
        dest = tmp_path / f"download-{where}"
        command = [sys.executable, "-m", "pip", "download", "-vv", "--no-cache-dir", "--no-deps",
                   "-d", str(dest), "old-pkg"]  # fmt: skip
        result = subprocess.run(
            command, env=installer_env(index), capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(p.name for p in dest.iterdir()) == ["old_pkg-1.0-py3-none-any.whl"]
        seen[where] = [name for name in NOT_FOR_PIP if name in result.stdout + result.stderr]
    assert seen == {"mirror": [], "upstream": list(NOT_FOR_PIP)}


@pytest.mark.parametrize(
    ("user_agent", "first"),
    [
        ('pip/26.3 {"installer":{"name":"pip","version":"26.3"},"python":"3.11.7"}', True),
        ("uv/0.13.9 (x86_64-unknown-linux-gnu)", True),
        ("pdm/2.20 python-requests/2.32", False),
        ("python-requests/2.32.3", False),
        ("Mozilla/5.0 pip/26.3", False),
        ("curl/8.5.0", False),
        ("", False),
        (None, False),
    ],
)
def test_answered_before_writing(user_agent: str | None, first: bool) -> None:
    """Installers are answered a page fetched just now before it is written; other clients find
    on disk what they were answered."""
    assert answered_before_writing(user_agent) is first


HERE = dict(marker_environment(None))


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (
            'pip/26.3 {"python":"3.10.14","implementation":{"name":"PyPy","version":"7.3.16"},'
            '"system":{"name":"Darwin","release":"23.1.0"},"cpu":"arm64"}',
            {"python_version": "3.10", "python_full_version": "3.10.14", "implementation_name": "pypy",
             "platform_python_implementation": "PyPy", "implementation_version": "7.3.16",
             "platform_system": "Darwin", "sys_platform": "darwin", "os_name": "posix",
             "platform_release": "23.1.0", "platform_machine": "arm64"},
        ),
        (
            'uv/0.9.0 {"python":"3.13.0","implementation":{"name":"CPython"},"system":{"name":"Windows"},'
            '"cpu":"AMD64"}',
            {"python_version": "3.13", "python_full_version": "3.13.0", "implementation_name": "cpython",
             "sys_platform": "win32", "os_name": "nt", "platform_system": "Windows",
             "platform_machine": "AMD64"},
        ),
        # a system the markers know no sys_platform of keeps this one's, and says its own name
        ('pip/26.3 {"system":{"name":"FreeBSD"}}', {"platform_system": "FreeBSD"}),
        # what cannot be read is this interpreter's
        ('pip/26.3 {"python":"3.x","implementation":{"name":"C Python"},"cpu":7}', {}),
        ("pip/26.3 not json", {}),
        ('pip/26.3 ["python"]', {}),
        ('poetry/2.0 {"python":"3.9.1"}', {}),  # another client's document is not read
        ("", {}),
        (None, {}),
        ("pip/26.3 " + "[" * 10_000, {}),  # too long
    ],
)  # fmt: skip
def test_marker_environment_is_the_installers_as_far_as_its_user_agent_tells(
    agent: str | None, expected: dict[str, str]
) -> None:
    assert dict(marker_environment(agent)) == {**HERE, **expected}
