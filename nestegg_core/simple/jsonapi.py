"""The PyPI JSON API of a page: Warehouse's ``/pypi/<name>/json`` and ``/pypi/<name>/<version>/json``.

Pure functions from a project page and the core metadata nestegg holds of one release to
Warehouse's document. What nestegg cannot know (download counts, a serial, the long description
of a release whose metadata it has not seen) is null, as Warehouse gives a field it lacks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from packaging.version import Version

from .models import DistFile, ProjectPage, parse_version, version_key, version_of

__all__ = ["find_release", "latest_release", "packagetype", "project_json", "releases_of"]

UrlFor = Callable[[DistFile], str]

#: Warehouse's package types by how a file's name ends (the rest are not listed in a release)
_PACKAGE_TYPES = (
    (".whl", "bdist_wheel"), (".tar.gz", "sdist"), (".zip", "sdist"), (".tar.bz2", "sdist"),
    (".tgz", "sdist"), (".tar.xz", "sdist"), (".tar", "sdist"), (".egg", "bdist_egg"),
    (".exe", "bdist_wininst"), (".msi", "bdist_msi"), (".rpm", "bdist_rpm"), (".dmg", "bdist_dmg"),
)  # fmt: skip
#: core metadata fields of one value, by the name Warehouse gives them in ``info``
_SINGLE = {
    "author": "author", "author_email": "author-email", "description": "description",
    "description_content_type": "description-content-type", "download_url": "download-url",
    "home_page": "home-page", "keywords": "keywords", "license": "license",
    "license_expression": "license-expression", "maintainer": "maintainer",
    "maintainer_email": "maintainer-email", "summary": "summary",
}  # fmt: skip
#: core metadata fields of many values, likewise (null when the metadata is unknown)
_MULTIPLE = {
    "dynamic": "dynamic", "license_files": "license-file", "provides_extra": "provides-extra",
    "requires_dist": "requires-dist",
}  # fmt: skip


def packagetype(filename: str) -> str | None:
    """Warehouse's ``packagetype`` of a file (``bdist_wheel``, ``sdist``, ...), or None."""
    lowered = filename.lower()
    return next((kind for suffix, kind in _PACKAGE_TYPES if lowered.endswith(suffix)), None)


def releases_of(page: ProjectPage) -> dict[str, list[DistFile]]:
    """The files of each release, by the version as the page's ``versions`` spell it (the
    upstream's spelling), else as the filename does; a version without files lists none."""
    spelling: dict[str, str] = {}
    releases: dict[str, list[DistFile]] = {}
    for text in page.versions:
        key = version_key(text)
        if key not in spelling:
            spelling[key] = text
            releases[text] = []
    for dist in page.files:
        version = version_of(dist.filename)  # normalized already
        if version is None or packagetype(dist.filename) is None:
            continue
        text = spelling.setdefault(version_key(version), version)
        releases.setdefault(text, []).append(dist)
    return releases


def find_release(releases: Mapping[str, Sequence[DistFile]], text: str) -> str | None:
    """The key of ``releases`` that is the version ``text`` in any spelling, or None."""
    if text in releases:
        return text
    key = version_key(text)
    return next((version for version in releases if version_key(version) == key), None)


def latest_release(releases: Mapping[str, Sequence[DistFile]]) -> str | None:
    """The release Warehouse describes in ``info``: the highest final release with a file not
    yanked, else the highest with a file not yanked, else the highest; None without releases."""
    readable = [(v, version) for version in releases if (v := parse_version(version)) is not None]

    def highest(pairs: list[tuple[Version, str]]) -> str | None:
        return max(pairs)[1] if pairs else None

    live = [(v, text) for v, text in readable if any(d.yanked is None for d in releases[text])]
    return (
        highest([(v, text) for v, text in live if not v.is_prerelease])
        or highest(live)
        or highest(readable)
        or next(iter(releases), None)
    )


def project_json(
    page: ProjectPage,
    version: str,
    releases: Mapping[str, Sequence[DistFile]],
    *,
    metadata: Mapping[str, list[str]] | None,
    url_for: UrlFor,
    with_releases: bool,
) -> bytes:
    """Warehouse's document of ``version`` (a key of ``releases``): ``info`` from ``metadata``
    (the release's core metadata fields, as :func:`distmeta.metadata_fields` reads them, or None
    when nestegg holds none), ``urls`` its files, and with ``with_releases`` every release's."""
    files = releases[version]
    document: dict[str, Any] = {
        "info": _info(page, version, files, metadata),
        "last_serial": None,
    }
    if with_releases:
        document["releases"] = {text: [_file(d, url_for) for d in dists] for text, dists in releases.items()}
    document["urls"] = [_file(d, url_for) for d in files]
    document["vulnerabilities"] = []
    return json.dumps(document, separators=(",", ":")).encode()


def _info(
    page: ProjectPage, version: str, files: Sequence[DistFile], metadata: Mapping[str, list[str]] | None
) -> dict[str, Any]:
    def one(field: str) -> str | None:
        values = (metadata or {}).get(field)
        return values[0] if values else None

    yanked = bool(files) and all(d.yanked is not None for d in files)
    requires_python = one("requires-python") or next(
        (d.requires_python for d in files if d.requires_python), None
    )
    info: dict[str, Any] = {name: one(field) for name, field in _SINGLE.items()}
    info.update(
        {
            name: None if metadata is None else list(metadata.get(field, ()))
            for name, field in _MULTIPLE.items()
        }
    )
    info.update(
        bugtrack_url=None,
        classifiers=list((metadata or {}).get("classifier", ())),
        docs_url=None,
        downloads={"last_day": -1, "last_month": -1, "last_week": -1},
        name=one("name") or page.name,
        package_url=None,
        platform=one("platform"),
        project_url=None,
        project_urls=_project_urls(metadata),
        release_url=None,
        requires_python=requires_python,
        version=version,
        yanked=yanked,
        yanked_reason=(next((d.yanked for d in files if d.yanked), None) if yanked else None),
    )
    if metadata is not None and not info["requires_dist"]:
        info["requires_dist"] = None  # as Warehouse says a release that requires nothing
    return dict(sorted(info.items()))


def _project_urls(metadata: Mapping[str, list[str]] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    urls = {}
    for entry in metadata.get("project-url", ()):
        label, comma, url = entry.partition(",")
        if comma:
            urls[label.strip()] = url.strip()
    return urls or None


def _file(dist: DistFile, url_for: UrlFor) -> dict[str, Any]:
    digests = {
        name: dist.hashes[algorithm]
        for name, algorithm in (("blake2b_256", "blake2b_256"), ("md5", "md5"), ("sha256", "sha256"))
        if algorithm in dist.hashes
    }
    upload_time, iso = _times(dist.upload_time)
    kind = packagetype(dist.filename)
    return {
        "comment_text": "",
        "digests": digests,
        "downloads": -1,
        "filename": dist.filename,
        "has_sig": False,
        "md5_digest": digests.get("md5"),
        "packagetype": kind,
        "python_version": _python_version(dist.filename) if kind == "bdist_wheel" else "source",
        "requires_python": dist.requires_python,
        "size": dist.size,
        "upload_time": upload_time,
        "upload_time_iso_8601": iso,
        "url": url_for(dist),
        "yanked": dist.yanked is not None,
        "yanked_reason": dist.yanked or None,
    }


def _python_version(filename: str) -> str | None:
    parts = filename[: -len(".whl")].split("-")
    return parts[-3] if len(parts) in (5, 6) else None


def _times(text: str | None) -> tuple[str | None, str | None]:
    """Warehouse's two forms of an upload time (seconds, naive; ISO 8601 in UTC with a ``Z``)."""
    if not text:
        return None, None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S"), moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
