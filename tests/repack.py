"""Rebuild a wheel from an installed distribution, offline.

Tests need real build backends (setuptools, hatchling and their dependencies) on a fake
upstream index without any network: :func:`repack` turns what is installed in the running
interpreter back into a wheel. The files are the ones its ``RECORD`` lists (inside
site-packages; byte code and the installer's own files are left out), the ``.dist-info`` is
kept and a new ``RECORD`` with sha256 hashes is written. A pure distribution is tagged
``py3-none-any``; one with compiled code keeps the tags of its ``WHEEL`` file.

Files an installer put outside site-packages (scripts, data) are not carried over: console
scripts come back from ``entry_points.txt`` when the wheel is installed.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from email.parser import Parser
from pathlib import Path, PurePosixPath

from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from nestegg_core.errors import NesteggError

__all__ = ["RepackError", "repack"]

logger = logging.getLogger(__name__)

#: written by installers, not part of a wheel (PEP 376, 610, 627)
_INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_BINARY_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_PURE_TAG = "py3-none-any"


class RepackError(NesteggError):
    """An installed distribution cannot be turned back into a wheel."""


def repack(name: str, dest: Path, *, path: Iterable[str] | None = None) -> Path:
    """Write a wheel of the installed distribution ``name`` into ``dest``; return its path.

    ``path`` is the list of directories to look in (default ``sys.path``). The wheel's bytes
    depend only on the installed files, so repacking twice gives the same file.
    """
    search = {"name": name} if path is None else {"name": name, "path": list(path)}
    found = list(importlib.metadata.distributions(**search))
    if not found:
        raise RepackError(f"distribution {name!r} is not installed")
    dist = found[0]
    dist_info = _dist_info_dir(dist, name)
    if _is_editable(dist_info):
        raise RepackError(f"distribution {name!r} is an editable install; its files are not installed")
    project = dist.metadata["Name"]
    raw_version = dist.version
    try:
        version = str(Version(raw_version))
    except InvalidVersion:
        raise RepackError(f"distribution {name!r} has an invalid version {raw_version!r}") from None
    site = dist_info.parent
    members = _members(dist, name, site, dist_info)
    tag = _tag(dist_info, members, name)
    wheel_name = f"{canonicalize_name(project).replace('-', '_')}-{version}-{tag}.whl"
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / wheel_name
    _write_wheel(target, site, dist_info.name, members)
    logger.debug("repacked %s %s into %s", project, version, target)
    return target


def _dist_info_dir(dist: importlib.metadata.Distribution, name: str) -> Path:
    # PathDistribution keeps its directory private; locate_file("") is its parent
    for item in dist.files or ():
        parts = PurePosixPath(str(item)).parts
        if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
            return Path(str(dist.locate_file(parts[0])))
    raise RepackError(
        f"distribution {name!r} has no RECORD listing its .dist-info (not installed as a wheel)"
    )


def _is_editable(dist_info: Path) -> bool:
    try:
        data = json.loads((dist_info / "direct_url.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(data, dict) and data.get("dir_info", {}).get("editable"))


def _members(dist: importlib.metadata.Distribution, name: str, site: Path, dist_info: Path) -> list[str]:
    """Archive names (relative to site-packages, POSIX) of the files to carry over, sorted."""
    members = []
    for item in dist.files or ():
        rel = PurePosixPath(str(item))
        if ".." in rel.parts or rel.is_absolute():
            logger.debug("%s: leaving out %s (outside site-packages)", name, rel)
            continue
        if "__pycache__" in rel.parts or rel.suffix == ".pyc":
            continue
        if rel.parent.as_posix() == dist_info.name and rel.name in _INSTALLER_FILES:
            continue
        if not (site / rel).is_file():
            raise RepackError(f"distribution {name!r} lists {rel.as_posix()!r} but it is not installed")
        members.append(rel.as_posix())
    return sorted(set(members))


def _tag(dist_info: Path, members: list[str], name: str) -> str:
    binary = any(member.endswith(_BINARY_SUFFIXES) or ".so." in member for member in members)
    try:
        wheel = Parser().parsestr((dist_info / "WHEEL").read_text(encoding="utf-8"))
    except OSError:
        wheel = None
    tags = [] if wheel is None else wheel.get_all("Tag") or []
    purelib = wheel is None or (wheel.get("Root-Is-Purelib", "true").strip().lower() == "true")
    if not binary and purelib:
        return _PURE_TAG
    if not tags:
        raise RepackError(f"distribution {name!r} has compiled files but no Tag in its WHEEL file")
    for tag in tags:
        parse_tag(tag)  # raises ValueError on garbage: a broken WHEEL file is a bug to see
    interpreters = sorted({t.split("-")[0] for t in tags})
    abis = sorted({t.split("-")[1] for t in tags})
    platforms = sorted({t.split("-")[2] for t in tags})
    return "-".join(".".join(part) for part in (interpreters, abis, platforms))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _zip_add(archive: zipfile.ZipFile, arcname: str, data: bytes, *, executable: bool = False) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_EPOCH)
    info.create_system = 3  # Unix, whatever writes it, so the bytes do not depend on the OS
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _write_wheel(target: Path, site: Path, dist_info_name: str, members: list[str]) -> None:
    # the .dist-info goes last, as the wheel spec recommends, with RECORD the very last member
    ordered = [m for m in members if not m.startswith(dist_info_name + "/")]
    ordered += [m for m in members if m.startswith(dist_info_name + "/")]
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(out, "w") as archive:
            rows = []
            for member in ordered:
                path = site / member
                data = path.read_bytes()
                _zip_add(archive, member, data, executable=bool(path.stat().st_mode & stat.S_IXUSR))
                rows.append((member, _record_hash(data), str(len(data))))
            record = f"{dist_info_name}/RECORD"
            rows.append((record, "", ""))
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            _zip_add(archive, record, text.getvalue().encode("utf-8"))
        tmp_path.chmod(0o644)
        tmp_path.replace(target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
