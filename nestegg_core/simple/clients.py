"""Which files of a page can an installer use: read off pip's User-Agent (``compatible_only``).

pip sends, in its User-Agent, a JSON document describing the interpreter it installs for (PEP-less
but stable since pip 6: the "linehaul" data). From it this module derives a :class:`ClientProfile`
and drops from a page the files pip would certainly reject for that interpreter: wheels for
another Python, another operating system or processor, a newer glibc or musl on a glibc system,
and files whose Requires-Python excludes the interpreter. pip's time on a warm index is mostly
spent turning each link of a page into a candidate; a page of thousands of wheels shrinks to the
few dozen that fit.

Every rule keeps a file when in doubt: an unknown tag, operating system, processor or malformed
Requires-Python never drops anything, and 32-bit interpreters on 64-bit systems (which report
the 64-bit processor) keep their 32-bit wheels. What cannot be seen from the User-Agent is pip's
``--platform``/``--python-version``/``--ignore-requires-python``: hence the filter is opt-in, and
uv (which also resolves for other platforms: ``uv lock``) is never filtered.

A profile keys the renderings of a page, so it holds only what the rules read, in a bounded form:
the Python's major and minor (a file is dropped only when no release of that minor could take
it), and a value outside the ones the rules know (an interpreter, system, processor or glibc of
no wheel tag) as unknown, which they treat alike. Made-up User-Agents thus make no more kinds of
page than real ones do; one whose Python is out of range gets the page of every file.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from types import MappingProxyType

from packaging.markers import default_environment
from packaging.version import Version

from .models import DistFile, ProjectPage, parse_number, parse_specifier, parse_version

__all__ = [
    "PIP_METADATA_MIN_SIZE",
    "ClientProfile",
    "downloads_after_metadata",
    "fits",
    "for_client",
    "for_pip",
    "lists_cached_metadata",
    "marker_environment",
    "pip_installs_from",
    "pip_lists_metadata",
    "profile_from_user_agent",
    "wheel_tag_sets",
]

_MAX_USER_AGENT = 4096

#: operating system of a wheel's platform tag, by prefix, as ``platform.system()`` names it
_FAMILIES = (
    ("manylinux", "Linux"),
    ("musllinux", "Linux"),
    ("linux", "Linux"),
    ("macosx", "Darwin"),
    ("win", "Windows"),
    ("ios", "iOS"),
    ("android", "Android"),
)
_KNOWN_SYSTEMS = frozenset(system for _, system in _FAMILIES)

#: Linux processors, as ``platform.machine()`` reports them and platform tags end
_LINUX_ARCHES = frozenset({"x86_64", "i686", "aarch64", "armv7l", "ppc64le", "s390x", "riscv64"})
#: a 64-bit kernel may run a 32-bit interpreter, which needs the 32-bit wheels
_LINUX_ALSO = {"x86_64": {"i686"}, "aarch64": {"armv7l"}}
#: Windows processors (``platform.machine()``) and the platform tags their interpreters accept;
#: a 32-bit interpreter on 64-bit Windows reports AMD64 and emulation blurs ARM64, hence the overlap
_WINDOWS = {"AMD64": {"win_amd64", "win32"}, "x86": {"win32"}, "ARM64": {"win_arm64", "win_amd64", "win32"}}
#: macOS processors and the architectures of the ``macosx_X_Y_<arch>`` tags their interpreters accept
_MACOS = {
    "arm64": {"arm64", "universal2"},
    "x86_64": {"x86_64", "intel", "fat64", "fat32", "fat3", "universal", "universal2"},
}
_MACOS_ARCHES = frozenset({"arm64", "x86_64", "i386", "ppc", "ppc64", "intel", "fat", "fat3", "fat32",
                           "fat64", "universal", "universal2"})  # fmt: skip

#: the interpreters whose wheel tags the rules read; every other is the same to them
_IMPLEMENTATIONS = frozenset({"CPython", "PyPy"})
#: a profile's interpreter when it is none of those
UNKNOWN = "unknown"
#: the processors the rules read, by system (on another system none is)
_CPUS = {"Linux": _LINUX_ARCHES, "Windows": frozenset(_WINDOWS), "Darwin": frozenset(_MACOS)}
#: the Pythons (major, then minor) and glibc minors a profile is made for; another is unknown
_MAJORS = range(2, 5)
_MAX_MINOR = 99
_MAX_GLIBC_MINOR = 99

_MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_GLIBC_TAG = re.compile(r"^manylinux_(\d+)_(\d+)_")
_PYTHON_TAG = re.compile(r"^(cp|py|pp)(\d)(\d*)$")


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientProfile:
    """The interpreter an installer installs for, as far as its User-Agent tells."""

    implementation: str  # "CPython", "PyPy" or UNKNOWN
    python: Version  # major.minor of the interpreter (a longer one is read as its major.minor)
    system: str | None = None  # platform.system(): "Linux", "Darwin", "Windows"; None: unknown
    cpu: str | None = None  # platform.machine(), if the rules know it on that system
    glibc: tuple[int, int] | None = None  # on Linux with glibc

    @property
    def major_minor(self) -> tuple[int, int]:
        return self.python.major, self.python.minor


@lru_cache(maxsize=256)
def profile_from_user_agent(user_agent: str | None) -> ClientProfile | None:
    """The profile pip's User-Agent describes, in its bounded form (see the module docstring), or
    None for any other client, an unreadable one, or a Python out of range."""
    if not user_agent or len(user_agent) > _MAX_USER_AGENT or not user_agent.startswith("pip/"):
        return None
    _, _, document = user_agent.partition(" ")
    try:
        data = json.loads(document)
        implementation = data["implementation"]["name"]
        full = parse_version(data["python"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if full is None or not isinstance(implementation, str):
        return None
    major, minor = (*full.release, 0)[:2]
    if major not in _MAJORS or minor > _MAX_MINOR:
        return None
    system = _text(data.get("system"), "name")
    system = system if system in _KNOWN_SYSTEMS else None
    glibc = None
    libc = _mapping(data.get("distro")).get("libc")
    if system == "Linux" and _text(libc, "lib") == "glibc":
        match = re.match(r"^(\d+)\.(\d+)", _text(libc, "version") or "")
        glibc = _pair(match.group(1), match.group(2)) if match else None
        if glibc is not None and (glibc[0] != 2 or glibc[1] > _MAX_GLIBC_MINOR):
            glibc = None
    cpu = data.get("cpu")
    return ClientProfile(
        implementation=implementation if implementation in _IMPLEMENTATIONS else UNKNOWN,
        python=Version(f"{major}.{minor}"),
        system=system,
        cpu=cpu if isinstance(cpu, str) and cpu in _CPUS.get(system or "", ()) else None,
        glibc=glibc,
    )


#: ``sys.platform`` and ``os.name`` of an interpreter, by ``platform.system()``
_SYS_PLATFORMS = {"Linux": ("linux", "posix"), "Darwin": ("darwin", "posix"), "Windows": ("win32", "nt")}
_INSTALLER = re.compile(r"^(pip|uv)/[0-9][^ ]* ")
_RELEASE = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,4})?")


@lru_cache(maxsize=64)
def marker_environment(user_agent: str | None) -> Mapping[str, str]:
    """The environment markers of the interpreter an installer installs for, as far as its
    User-Agent tells (pip's and uv's carry pip's "linehaul" document); the rest, and all of it for
    another client, is this interpreter's. A guess, for fetching ahead what the client may ask: a
    value that cannot be read is left as this interpreter's."""
    environment = {key: str(value) for key, value in default_environment().items()}
    if not user_agent or len(user_agent) > _MAX_USER_AGENT or not _INSTALLER.match(user_agent):
        return MappingProxyType(environment)
    try:
        data = json.loads(user_agent.partition(" ")[2])
    except (ValueError, RecursionError):
        return MappingProxyType(environment)
    data = _mapping(data)
    python = data.get("python")
    if isinstance(python, str) and _RELEASE.fullmatch(python):
        environment["python_full_version"] = python
        environment["python_version"] = ".".join(python.split(".")[:2])
    implementation = _text(data.get("implementation"), "name")
    if implementation is not None and implementation.isidentifier():
        environment["platform_python_implementation"] = implementation
        environment["implementation_name"] = implementation.lower()
        version = _text(data.get("implementation"), "version")
        if version is not None and _RELEASE.fullmatch(version):
            environment["implementation_version"] = version
    system = _text(data.get("system"), "name")
    if system is not None and system.isprintable():
        environment["platform_system"] = system
        environment["sys_platform"], environment["os_name"] = _SYS_PLATFORMS.get(
            system, (environment["sys_platform"], environment["os_name"])
        )
        release = _text(data.get("system"), "release")
        if release is not None and release.isprintable():
            environment["platform_release"] = release
    cpu = data.get("cpu")
    if isinstance(cpu, str) and cpu.isprintable() and cpu:
        environment["platform_machine"] = cpu
    return MappingProxyType(environment)


def lists_cached_metadata(user_agent: str | None) -> bool:
    """Whether a page for the client of ``user_agent`` lists the PEP 658 metadata of a wheel the
    mirror has cached. pip downloads every wheel it resolved to, so for it a cached wheel costs
    one request as the file alone and two as metadata plus file; uv (and every other client) may
    resolve from metadata alone, and keeps it. Wheels not cached keep their metadata for all,
    but for pip only the large ones (:func:`pip_lists_metadata`)."""
    return not (user_agent or "").startswith("pip/")


def downloads_after_metadata(user_agent: str | None) -> bool:
    """Whether the client, having read a wheel's PEP 658 metadata, most likely asks for that wheel
    next: pip does, once it has resolved the rest (``download``, ``install``, ``wheel``; not a
    dry run or ``pip lock``, nor after backtracking). uv and poetry read the metadata of every
    version they weigh, most of which they never download."""
    return (user_agent or "").startswith("pip/")


def answered_before_writing(user_agent: str | None) -> bool:
    """Whether a page the mirror fetched just now for the client is answered before it is written
    to the cache: an installer (pip, uv) waits on each answer before it goes on, and the disk is not
    its business. Any other client (a script, a monitor, a browser) finds on disk what it was
    answered once it has it."""
    return (user_agent or "").startswith(("pip/", "uv/"))


#: the size from which a wheel not cached is listed with its PEP 658 metadata on pip's pages: pip
#: downloads the wheel it resolved to whether or not it read the metadata first, so the metadata
#: saves pip a download only of a wheel it then rejects (backtracking), and costs a request
#: (and the mirror some ranges of the upstream's wheel) always. About 0.3 s of a 7 MB/s link.
PIP_METADATA_MIN_SIZE = 2 * 1024 * 1024
#: the same, for the metadata of a wheel the upstream offers none for, which the mirror reads by
#: ranges of the wheel: two or three round trips to the upstream on pip's way, where pip going
#: to the upstream itself makes none (pip 26, a cold run of 34 mixed projects: 6 wheels of 3 to
#: 13 MB, 13 ranges). About 0.8 s of a 20 MB/s link: a wheel pip rejects costs that much more
PIP_RANGED_METADATA_MIN_SIZE = 16 * 1024 * 1024


def pip_lists_metadata(dist: DistFile, *, ranged: bool = False) -> bool:
    """Whether a page for pip lists the PEP 658 metadata of ``dist``, a file the mirror has not
    cached: only that of a wheel of at least :data:`PIP_METADATA_MIN_SIZE` (of
    :data:`PIP_RANGED_METADATA_MIN_SIZE` when the mirror would read it by ``ranged`` reads of
    the wheel) or of unknown size. A small wheel comes whole at about the cost of its metadata,
    and pip's page of it then stays the same once it is cached (no rendering made again)."""
    least = PIP_RANGED_METADATA_MIN_SIZE if ranged else PIP_METADATA_MIN_SIZE
    return dist.size is None or dist.size >= least


#: the files pip installs from: a wheel, or a source distribution in an archive it unpacks (pip
#: 26's ``SUPPORTED_EXTENSIONS``; older releases take no others); it skips every other link
_PIP_SUFFIXES = (
    ".whl", ".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz",
    ".tar.lzma",
)  # fmt: skip


def pip_installs_from(dist: DistFile) -> bool:
    """False when no pip, for any interpreter or platform, would take ``dist``: an egg, a Windows
    or Linux installer (``.exe``, ``.msi``, ``.rpm``...), an archive it cannot unpack. Each such
    link costs pip about two-thirds of a wheel's time (3% of the links of 34 popular projects,
    mostly old eggs and installers)."""
    filename = dist.filename
    # pip compares the suffix as it is spelled; any case is kept here, in doubt
    return filename.endswith(_PIP_SUFFIXES) or filename.lower().endswith(_PIP_SUFFIXES)


def for_pip(page: ProjectPage) -> ProjectPage:
    """``page`` without the files no pip takes (:func:`pip_installs_from`), all versions still
    listed; ``page`` itself when it has none."""
    if all(map(pip_installs_from, page.files)):
        return page
    # the same versions, not worked out again from the files (a third of the time on a large page)
    return replace(page, files=tuple(dist for dist in page.files if pip_installs_from(dist)))


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _text(value: object, key: str) -> str | None:
    found = _mapping(value).get(key)
    return found if isinstance(found, str) and found else None


def for_client(page: ProjectPage, profile: ClientProfile) -> ProjectPage:
    """``page`` with only the files that may fit ``profile`` (all versions still listed)."""
    return replace(page, files=tuple(d for d in page.files if fits(d, profile)))


def fits(dist: DistFile, profile: ClientProfile) -> bool:
    """False only when pip, installing for ``profile``, would certainly reject ``dist``."""
    if dist.requires_python is not None and not _python_allowed(dist.requires_python, profile.major_minor):
        return False
    if not dist.filename.endswith(".whl"):
        return True
    tag_sets = wheel_tag_sets(dist.filename)
    if tag_sets is None:
        return True
    pythons, abis, platforms = tag_sets
    return any(_interpreter_fits(python, abi, profile) for python in pythons for abi in abis) and any(
        _platform_fits(platform, profile) for platform in platforms
    )


def wheel_tag_sets(filename: str) -> tuple[list[str], list[str], list[str]] | None:
    """The Python, ABI and platform tags a wheel's name gives, each set unexpanded (``py2.py3``
    is two); None for a name of neither 5 nor 6 parts."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    pythons, abis, platforms = (part.split(".") for part in parts[-3:])
    return pythons, abis, platforms


@lru_cache(maxsize=4096)
def _python_allowed(requires_python: str, python: tuple[int, int]) -> bool:
    """Whether some release of the Python minor ``python`` satisfies ``requires_python`` (pip
    compares the interpreter's release: 3.11.4 for 3.11.4rc1)."""
    specifier = parse_specifier(requires_python)
    if specifier is None:
        return True  # pip ignores a Requires-Python it cannot parse, and so do we
    major, minor = python
    # the releases of the minor a specifier takes are bounded by the micros its clauses name
    # (>=3.11.4, !=3.11.5): the least one it takes is 0 or one of those, or the one after
    micros = {0}
    for spec in specifier:
        version = parse_version(spec.version.removesuffix(".*"))
        if version is not None and version.release[:2] == (major, minor):
            micro = version.release[2] if len(version.release) > 2 else 0
            micros.update((micro, micro + 1))
    return any(
        specifier.contains(Version(f"{major}.{minor}.{micro}"), prereleases=True) for micro in sorted(micros)
    )


def _interpreter_fits(python: str, abi: str, profile: ClientProfile) -> bool:
    match = _PYTHON_TAG.match(python)
    if match is None:
        return True  # an interpreter tag this module does not know: keep
    kind, major_text, minor_text = match.groups()
    major, minor = profile.major_minor
    if int(major_text) != major:
        return False
    tag_minor = _minor(minor_text) if minor_text else None
    if kind == "py":
        return tag_minor is None or tag_minor <= minor
    expected = {"cp": "CPython", "pp": "PyPy"}[kind]
    if profile.implementation not in ("CPython", "PyPy"):
        return True  # another interpreter's tags are its own business
    if profile.implementation != expected:
        return False
    if kind == "pp" or tag_minor is None:
        return True
    if tag_minor == minor:
        return True
    # older CPython tags fit only through the stable ABI (or with no ABI at all)
    return tag_minor < minor and abi in ("abi3", "none")


def _platform_fits(platform: str, profile: ClientProfile) -> bool:
    if platform == "any":
        return True
    family = next((system for prefix, system in _FAMILIES if platform.startswith(prefix)), None)
    if family is None or profile.system not in _KNOWN_SYSTEMS:
        return True
    if family != profile.system:
        return False
    cpu = profile.cpu
    if family == "Linux":
        if platform.startswith("musllinux") and profile.glibc is not None:
            return False  # pip on a glibc system never takes musllinux wheels
        if not _glibc_allows(platform, profile.glibc):
            return False
        arch = next((a for a in _LINUX_ARCHES if platform.endswith("_" + a)), None)
        if arch is None or cpu not in _LINUX_ARCHES:
            return True
        return arch == cpu or arch in _LINUX_ALSO.get(cpu, ())
    if family == "Windows" and cpu in _WINDOWS:
        return platform in _WINDOWS[cpu] or not platform.startswith(("win32", "win_amd64", "win_arm64"))
    if family == "Darwin" and cpu in _MACOS:
        arch = platform.split("_", 3)[-1] if platform.count("_") >= 3 else ""
        return arch in _MACOS[cpu] or arch not in _MACOS_ARCHES
    return True


def _glibc_allows(platform: str, glibc: tuple[int, int] | None) -> bool:
    if glibc is None:
        return True
    match = _GLIBC_TAG.match(platform)
    if match is not None:
        # a glibc too large to read is newer than any: no system has it
        needed = _pair(match.group(1), match.group(2))
        return needed is not None and needed <= glibc
    for legacy, needed in _MANYLINUX_LEGACY.items():
        if platform.startswith(legacy + "_"):
            return needed <= glibc
    return True


def _minor(text: str) -> int:
    """A tag's Python minor; one too large to read is newer than any Python (no interpreter fits)."""
    number = parse_number(text)
    return sys.maxsize if number is None else number


def _pair(major: str, minor: str) -> tuple[int, int] | None:
    """A glibc version from its two numbers, or None for numbers too large to read."""
    first, second = parse_number(major), parse_number(minor)
    return None if first is None or second is None else (first, second)
