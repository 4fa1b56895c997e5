"""``nestegg export``: cached and private files as a static PEP 503/691 index, for air-gapped machines.

The tree is plain files that any static web server, file share or removable disk can carry::

    DEST/simple/index.html, index.json           the project list (PEP 503 HTML, PEP 691 JSON)
    DEST/simple/<name>/index.html, index.json    project pages whose links lead to ../../files/
    DEST/files/<filename>, <filename>.metadata   every file, flat: also fit for pip --find-links
    DEST/.nestegg-export.json                    the files exports wrote, by project (``MANIFEST``)

What a requirements file needs is resolved by pip itself, against the mirror served in-process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from nestegg_core.config.config import Config
from nestegg_core.errors import ArchiveError, NesteggError, NotFound, UnsafePath, UploadError
from nestegg_core.index.repository import Repository
from nestegg_core.installers import installer_env
from nestegg_core.serve.server import Mirror
from nestegg_core.simple.distmeta import parse_dist_filename, wheel_metadata
from nestegg_core.simple.models import (
    DistFile,
    ProjectPage,
    can_check,
    is_dist_filename,
    mismatch,
    parse_specifier,
    parse_version,
)
from nestegg_core.simple.render import HTML_V1, JSON_V1, render_index, render_project
from nestegg_core.storage.fs import (
    atomic_file,
    open_read,
    read_at_most,
    sha256_file,
    write_atomic,
)
from nestegg_core.storage.store import check_filename

logger = logging.getLogger(__name__)

#: files to export: (project, filename) to the record to list and the file to copy
Chosen = dict[tuple[NormalizedName, str], tuple[DistFile, Path]]

#: in DEST: the files of DEST/files exports wrote, by project (``{"files": {filename: project}}``);
#: only those are ever removed, never a file put there otherwise (``pip download -d DEST/files``)
MANIFEST = ".nestegg-export.json"
#: a manifest larger than this is not read (some 700,000 files' names)
MAX_MANIFEST = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    dest: Path
    #: the files exported, by project
    projects: dict[NormalizedName, tuple[DistFile, ...]] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return sum(len(files) for files in self.projects.values())


def export(
    config: Config,
    dest: Path,
    *,
    projects: Sequence[str] = (),
    requirements: Path | None = None,
    pip_args: Sequence[str] = (),
) -> ExportResult:
    """Write the chosen files of the nest, with PEP 503 and PEP 691 pages, as a static tree at ``dest``.

    ``projects`` are names or requirements (``name>=1.0``) picking cached and private files; with
    ``requirements`` pip resolves the file against the mirror and what it downloaded (with the build
    dependencies of sdists) is exported. With neither, everything cached and private is. Projects
    exported into ``dest`` before stay listed.
    """
    nest = config.nestegg_dir.resolve()
    if dest.resolve().is_relative_to(nest):
        # its files/ and simple/ would be taken for the nest's own (private projects of those names)
        raise NesteggError(
            f"cannot export into {str(dest)!r}: it is inside the nest {str(nest)!r}; name a folder outside it"
        )
    repository = Repository(config.with_changes(offline=True))
    chosen = _choose(config, repository, projects, requirements, pip_args)
    owners: dict[str, NormalizedName] = {}
    for name, filename in sorted(chosen):
        if owners.setdefault(filename, name) != name:
            raise NesteggError(f"projects {owners[filename]!r} and {name!r} both have a file {filename!r}")
    files_dir = dest / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    # what earlier exports wrote, read before this one rewrites any page: their pages, and the
    # manifest (which also has the files of an export cut short before its pages were written)
    pages = _exported_pages(dest / "simple", config.max_page_size)
    written = {filename: name for name, files in pages.items() for filename in files}
    written.update(_read_manifest(dest / MANIFEST))
    # said before any file is copied: an export cut short leaves no file the next does not know of
    _write_manifest(dest / MANIFEST, {**written, **owners})
    by_project: dict[NormalizedName, list[DistFile]] = {}
    page_metadata = _PageMetadata(repository)
    for (name, filename), (dist, path) in sorted(chosen.items()):
        try:
            metadata_hashes = page_metadata.hashes(name, dist)
            exported = _export_file(dist, path, files_dir, config, metadata_hashes)
        except UnsafePath as exc:  # planted in a shared nest: never copied through
            logger.warning("not exporting %s/%s: %s", name, filename, exc)
            continue
        by_project.setdefault(name, []).append(exported)
    # a project exported again is what this export says of it: the files an earlier one (of other
    # versions, or from another index) wrote of it go, or --find-links would still find them; once
    # its new page is written (cut short, an export leaves more files, never a page's gone)
    left_over = _left_over(written, pages, by_project)
    for name, files in by_project.items():
        files.sort(key=_version_order)
        page = ProjectPage.build(name, files)
        for content_type, index in ((HTML_V1, "index.html"), (JSON_V1, "index.json")):
            body = render_project(page, content_type, lambda d: "../../files/" + quote(d.filename))
            write_atomic(dest / "simple" / name / index, body)
    (dest / "simple").mkdir(exist_ok=True)
    listed = sorted(  # earlier exports into ``dest`` stay listed
        entry.name for entry in os.scandir(dest / "simple")
        if entry.is_dir() and (Path(entry.path) / "index.html").is_file()
    )  # fmt: skip
    for content_type, index in ((HTML_V1, "index.html"), (JSON_V1, "index.json")):
        write_atomic(dest / "simple" / index, render_index(listed, content_type))
    for filename, name in left_over:
        if _remove(files_dir / filename):
            logger.info("removed %s: this export of %s does not have it", files_dir / filename, name)
        _remove(files_dir / f"{filename}.metadata")
    written.update((dist.filename, name) for name, files in by_project.items() for dist in files)
    with os.scandir(files_dir) as entries:  # a file gone (removed, by hand too) is no export's any more
        present = {entry.name for entry in entries}
    _write_manifest(dest / MANIFEST, {f: name for f, name in written.items() if f in present})
    exported_files = sum(len(files) for files in by_project.values())
    # the command says it on stdout: the log says it again only when asked to (-vv)
    logger.debug("exported %d files of %d projects to %s", exported_files, len(by_project), dest)
    return ExportResult(dest=dest, projects={n: tuple(f) for n, f in by_project.items()})


def _choose(
    config: Config,
    repository: Repository,
    projects: Sequence[str],
    requirements: Path | None,
    pip_args: Sequence[str],
) -> Chosen:
    """The files to export (see :func:`export`)."""
    chosen: Chosen = {}
    if requirements is not None:
        for name, filename in _resolve(config, requirements, pip_args):
            chosen[(name, filename)] = _source(repository, name, filename)
    for spec in projects:
        found = _project_files(repository, spec)
        if not found:
            raise NotFound(f"nothing of {spec!r} is in the cache or the private store; install it "
                           "through the mirror first, or export with --requirements")  # fmt: skip
        chosen.update(found)
    if requirements is None and not projects:
        # every index's cache: a routed name's files are in its own index's namespace
        stores = [repository.store, *(routed.store for _, routed in repository.routes.items())]
        everything = {name for store in stores for name in store.project_names()}
        everything |= set(repository.private.names())
        for project in sorted(everything):
            chosen.update(_project_files(repository, project))
    return chosen


def _project_files(
    repository: Repository, spec: str
) -> dict[tuple[NormalizedName, str], tuple[DistFile, Path]]:
    """The cached and private files of a project whose versions ``spec`` allows."""
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        # packaging's message goes on with the spec and a caret under the fault: its first line says it
        first = str(exc).splitlines()[0]
        raise NesteggError(f"{spec!r} is not a project name or requirement: {first}") from None
    if parse_specifier(str(requirement.specifier)) is None:  # packaging reads its versions only when used
        raise NesteggError(f"{spec!r} is not a project name or requirement: unreadable version")
    name = canonicalize_name(requirement.name)
    store = repository.serving(name).store
    found = {(name, d.filename): (d, store.file_path(name, d.filename)) for d in store.kept_files(name)}
    page = repository.private.page(name)
    for dist in page.files if page is not None else ():
        found[(name, dist.filename)] = (dist, repository.private.root / name / dist.filename)
    return {
        key: value for key, value in found.items()
        if not requirement.specifier or _allowed(requirement, value[0])
    }  # fmt: skip


def _allowed(requirement: Requirement, dist: DistFile) -> bool:
    version = parse_version(dist.version or "")
    return version is not None and requirement.specifier.contains(version, prereleases=True)


def _source(repository: Repository, name: NormalizedName, filename: str) -> tuple[DistFile, Path]:
    private = repository.private.page(name)
    dist = private.file(filename) if private is not None else None
    if dist is not None:
        return dist, repository.private.root / name / filename
    store = repository.serving(name).store
    record = store.read_record(name, filename)
    path = store.file_path(name, filename)
    if record is None or not path.is_file():
        raise NotFound(f"{filename!r} was downloaded but is not in the cache (pruned meanwhile?)")
    return record, path


class _PageMetadata:
    """The hashes of a wheel's metadata that its page gives now: the mirror's page, else the
    record the file was kept with (a private file's page is its record). Only a wheel has any.

    The files of a project are exported one after another: its page's state is read once, for
    the first of its wheels, and kept until the next project's (never every project's at once)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.name: NormalizedName | None = None
        #: the metadata hashes the page of ``name`` gives each of its wheels
        self.listed: dict[str, Mapping[str, str]] = {}

    def hashes(self, name: NormalizedName, dist: DistFile) -> Mapping[str, str]:
        if not dist.filename.endswith(".whl"):
            return {}
        if dist.origin != "private":
            if name != self.name:
                state = self.repository.serving(name).store.read_page(name)
                files = state.page.files if state is not None else ()
                self.name = name
                wheels = (d for d in files if d.filename.endswith(".whl"))
                self.listed = {d.filename: d.core_metadata or {} for d in wheels}
            if dist.filename in self.listed:
                return self.listed[dist.filename]
        return dist.core_metadata or {}


def _export_file(
    dist: DistFile, path: Path, files_dir: Path, config: Config, metadata_hashes: Mapping[str, str]
) -> DistFile:
    """Copy one file (and its metadata) of the nest into ``files_dir``; the record the exported
    pages list. A link in the nest is not followed (:class:`UnsafePath`). The metadata kept beside
    a wheel is copied only when it matches ``metadata_hashes``, its page's: else the wheel's own is."""
    nest = config.nestegg_dir
    target = files_dir / check_filename(dist.filename)
    with open_read(nest, path) as source:
        sha256 = dist.own_sha256 or dist.sha256 or _sha256(source)
        if not (target.is_file() and sha256_file(target) == sha256):
            source.seek(0)
            with atomic_file(target) as handle:
                shutil.copyfileobj(source, handle)
        metadata: bytes | None = None
        if dist.filename.endswith(".whl"):
            metadata = _kept_metadata(dist, path, nest, metadata_hashes, config.max_metadata_size)
            if metadata is None:
                source.seek(0)
                try:
                    metadata = wheel_metadata(source, dist.filename)
                except (ArchiveError, OSError) as exc:  # exported all the same, as the mirror serves it
                    logger.warning("no PEP 658 metadata for %s: %s", dist.filename, exc)
    # listed as the mirror lists it: nestegg's own sha256 only where the upstream vouched for the bytes
    vouched = dist.origin == "private" or dist.sha256 is not None
    exported_hashes = None
    if metadata is not None:
        write_atomic(files_dir / f"{dist.filename}.metadata", metadata)
        exported_hashes = {"sha256": hashlib.sha256(metadata).hexdigest()} if vouched else {}
    else:  # an earlier export's would be served beside a page that lists none
        _remove(files_dir / f"{dist.filename}.metadata")
    return dist.with_changes(url="", hashes={"sha256": sha256} if vouched else {},
                             core_metadata=exported_hashes, origin="mirror")  # fmt: skip


def _kept_metadata(
    dist: DistFile, path: Path, nest: Path, hashes: Mapping[str, str], limit: int
) -> bytes | None:
    """The metadata file kept beside the wheel at ``path`` if its page gives a hash of it that it
    matches (one said refused when it does not); else None: the wheel's own is read."""
    if not any(can_check(algorithm) for algorithm in hashes):
        return None  # nothing vouches for it: the wheel's own is sure
    try:
        with open_read(nest, path.with_name(f"{path.name}.metadata")) as kept:
            data = read_at_most(kept, limit + 1)
    except FileNotFoundError:
        return None
    algorithm = mismatch(data, hashes) if len(data) <= limit else "size"
    if algorithm is not None:
        logger.warning(
            "not exporting the metadata kept of %s: its %s is not the one its page gives; the wheel's own is",
            dist.filename,
            algorithm,
        )
        return None
    return data


def _left_over(
    written: Mapping[str, NormalizedName],
    pages: Mapping[NormalizedName, Sequence[str]],
    exported: Mapping[NormalizedName, Sequence[DistFile]],
) -> list[tuple[str, NormalizedName]]:
    """The files an earlier export wrote of each project of ``exported`` (``written``, and what its
    page listed in ``pages``) that are not among its files now (filename and project). A file this
    export writes stays, whichever project's name it bears, and so does a file the page of a
    project this export does not rewrite lists."""
    keep = {dist.filename for files in exported.values() for dist in files}
    keep.update(filename for name, files in pages.items() if name not in exported for filename in files)
    left = {filename: name for filename, name in written.items() if name in exported}
    for name in exported:
        left.update((filename, name) for filename in pages.get(name, ()))
    # a name a page or the manifest gave is no path, and a file of another project than the one
    # it is listed under is not that project's: a damaged or planted list removes nothing else
    return [
        (filename, name) for filename, name in sorted(left.items())
        if filename not in keep and is_dist_filename(filename) and _project_of(filename) == name
    ]  # fmt: skip


def _project_of(filename: str) -> NormalizedName | None:
    """The project a distribution's filename names, or None if it names none."""
    try:
        return parse_dist_filename(filename)[0]
    except UploadError:
        return None


def _exported_pages(simple: Path, limit: int) -> dict[NormalizedName, list[str]]:
    """The filenames each project page an earlier export wrote in ``simple`` lists."""
    try:
        with os.scandir(simple) as entries:
            names = sorted(entry.name for entry in entries if entry.is_dir())
    except FileNotFoundError:
        return {}
    return {NormalizedName(name): _listed(simple / name / "index.json", limit) for name in names}


def _read_manifest(path: Path) -> dict[str, NormalizedName]:
    """The files of DEST/files exports wrote, by project, as :data:`MANIFEST` says; none (said
    in a line) when it is damaged: then only what the pages list is known to be an export's."""
    try:
        with path.open("rb") as handle:
            data = read_at_most(handle, MAX_MANIFEST + 1)
        if len(data) > MAX_MANIFEST:
            raise ValueError(f"larger than {MAX_MANIFEST} bytes")
        files = json.loads(data)["files"]
        if not isinstance(files, dict):
            raise TypeError(f"'files' is no mapping: {type(files).__name__}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        logger.warning("not reading %s (only files the exported pages list are removed): %s", path, exc)
        return {}
    return {
        filename: NormalizedName(name) for filename, name in files.items()
        if is_dist_filename(filename) and isinstance(name, str) and canonicalize_name(name) == name
    }  # fmt: skip


def _write_manifest(path: Path, files: Mapping[str, NormalizedName]) -> None:
    body = {"files": dict(sorted(files.items()))}
    write_atomic(path, json.dumps(body, indent=0, separators=(",", ":")).encode() + b"\n")


def _remove(path: Path) -> bool:
    """Remove the file (or link) ``path`` of the export; whether it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _listed(page: Path, limit: int) -> list[str]:
    """The filenames an exported PEP 691 page lists; none if it is not there or not one."""
    try:
        with page.open("rb") as handle:
            data = read_at_most(handle, limit + 1)
        files = json.loads(data)["files"] if len(data) <= limit else []
        return [str(entry["filename"]) for entry in files if isinstance(entry, dict)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        logger.warning("not reading the page exported before %s: %s", page, exc)
        return []


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _version_order(dist: DistFile) -> tuple[int, Version | str, str]:
    version = parse_version(dist.version or "")
    return (1, "", dist.filename) if version is None else (0, version, dist.filename)


def _resolve(config: Config, requirements: Path, pip_args: Sequence[str]) -> list[tuple[NormalizedName, str]]:
    """The files pip needs for ``requirements``, asked of this mirror served in-process.

    pip is the resolver whose answer matters (markers, extras, Requires-Python, yanked files), so it
    resolves; the mirror records every file it hands out during the run, which also catches the build
    dependencies of sdists that ``pip download`` fetches but does not keep.
    """
    if not requirements.is_file():
        why = "is not a file" if requirements.exists() else "does not exist"
        raise NesteggError(f"requirements file {str(requirements)!r} {why}")
    served: list[tuple[NormalizedName, str]] = []
    lock = threading.Lock()

    def recorder(app: Any) -> Any:
        def recording(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            def starting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                parts = environ.get("PATH_INFO", "").split("/")
                wanted = environ.get("REQUEST_METHOD") == "GET" and status[:3] in ("200", "206")
                if wanted and len(parts) == 4 and parts[1] == "files" and not parts[3].endswith(".metadata"):
                    with lock:
                        served.append((NormalizedName(parts[2]), unquote(parts[3])))
                return start_response(status, headers, exc_info)

            return app(environ, starting)  # type: ignore[no-any-return]

        return recording

    # a mirror for pip alone (``for_one_run``): no credentials needed to read private projects,
    # no size limit pruning what is about to be exported
    local = config.for_one_run().with_changes(
        port=0, credentials_file=None, private_read_auth=False, max_cache_size=None
    )
    with Mirror(local, middleware=recorder) as mirror, tempfile.TemporaryDirectory() as downloads:
        command = [
            sys.executable, "-m", "pip", "download", "--dest", downloads, "--progress-bar", "off",
            "--index-url", mirror.index_url, "--requirement", str(requirements), *pip_args,
        ]  # fmt: skip
        # no pip cache: a file it kept from an earlier run would never be asked of the mirror
        env = installer_env(mirror.index_url, PIP_NO_CACHE_DIR="1")
        logger.info("resolving %s with pip against %s", requirements, mirror.index_url)
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "; ".join(result.stderr.strip().splitlines()[-3:])
            raise NesteggError(f"pip could not download what {str(requirements)!r} needs: {tail}")
    return list(dict.fromkeys(served))


# the command line ---------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """``nestegg export``."""
    parser = commands.add_parser(
        "export",
        help="write cached and private files as a static index (for air-gapped machines)",
        description="Write cached and private files, with PEP 503 and PEP 691 pages, as a static index in "
        "DEST (outside the nest) that any web server, file share or removable disk can carry. Exports into "
        "one DEST add up; a project exported again is what the last export holds of it.",
    )
    parser.add_argument("dest", metavar="DEST", help="directory to write the index into")
    parser.add_argument(
        "--project", metavar="SPEC", action="append", default=[],
        help="a project name or requirement (like 'name>=2') whose cached files to export; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "-r", "--requirements", metavar="FILE",
        help="export what pip needs to install FILE, fetched through the mirror as needed",
    )  # fmt: skip
    parser.add_argument(
        "--pip-arg", metavar="ARG", action="append", default=[],
        help="an option for that pip download, like --platform=manylinux2014_x86_64; repeatable",
    )  # fmt: skip
    parser.set_defaults(func=_export_command)


def _export_command(args: argparse.Namespace, config: Config) -> int:
    requirements = Path(args.requirements) if args.requirements else None
    if args.pip_arg and requirements is None:  # it would change nothing, silently
        raise NesteggError(
            f"--pip-arg {args.pip_arg[0]!r}: it is for the pip that resolves --requirements FILE"
        )
    result = export(config, Path(args.dest), projects=args.project, requirements=requirements,
                    pip_args=args.pip_arg)  # fmt: skip
    dest = result.dest.absolute()
    print(f"exported {result.files} files of {len(result.projects)} projects to {dest}")
    print(f"install with: pip install --index-url {dest.as_uri()}/simple/ ...")
    print(f"          or: pip install --no-index --find-links {dest / 'files'} ...")
    return 0
