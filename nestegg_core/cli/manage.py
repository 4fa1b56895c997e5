"""The commands that manage private packages: ``build``, ``list``, ``remove``, ``yank``, ``passwd``.

Registered in :data:`nestegg_core.cli.COMMANDS`; each returns an exit code and raises
:class:`NesteggError` for the CLI to print as ``error: ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from nestegg_core.builds.sources import SourceBuilder, find_source_build
from nestegg_core.config.config import Config
from nestegg_core.config.credentials import check_user_name, make_token, set_password
from nestegg_core.errors import ConfigError, NesteggError, NotFound
from nestegg_core.serve.server import Mirror
from nestegg_core.simple.models import DistFile, parse_version
from nestegg_core.simple.patterns import NamePatterns
from nestegg_core.storage.private import PrivateStore
from nestegg_core.urls import without_credentials


def add_commands(commands: Any) -> None:
    """Add the subcommands to the ``nestegg`` parser's subparsers."""
    build = commands.add_parser("build", help="build source builds now (default: all of them)")
    build.add_argument("names", nargs="*", metavar="NAME", help="source build projects to build")
    build.set_defaults(func=run)

    listing = commands.add_parser(
        "list",
        help="list private projects, or the files of one",
        description="List the private projects with their versions, and the names each of the upstreams "
        "alone serves; or, given NAME, the files of that private project.",
    )
    listing.add_argument("name", nargs="?", metavar="NAME", help="the project whose files to list")
    listing.set_defaults(func=run)

    remove = commands.add_parser(
        "remove",
        help="remove a private file, or every file of a version",
        description="Remove FILENAME of the private project NAME, or every file of its version V; the name "
        "stays private. A serving mirror stops listing them at once. Cached files go with 'nestegg prune'.",
    )
    _add_target(remove)

    yank = commands.add_parser("yank", help="mark a private file (or version) yanked: installers skip it")
    _add_target(yank)
    yank.add_argument("--reason", default="", help="why, shown by installers")
    yank.add_argument("--undo", action="store_true", help="un-yank instead")

    passwd = commands.add_parser(
        "passwd",
        help="add a user to the credentials file, or change their password",
        description="Reads the password from stdin when it is not a terminal, else asks for it.",
    )
    passwd.add_argument("user", metavar="USER", help="the user name")
    passwd.add_argument("--file", metavar="FILE", help="credentials file (default: credentials_file)")
    passwd.add_argument("--delete", action="store_true", help="remove the user instead")
    passwd.add_argument(
        "--generate",
        action="store_true",
        help=(
            "make a random token naming USER as the password and print it alone on stdout "
            "(sent as user __token__)"
        ),
    )
    passwd.set_defaults(func=run)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the private project")
    parser.add_argument("filename", nargs="?", metavar="FILENAME", help="one file of it")
    parser.add_argument("--version", dest="target_version", metavar="V", help="every file of version V")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the subcommand ``args.command`` with ``config``."""
    if args.command == "build":
        return build(config, args.names)
    if args.command == "passwd":
        return passwd(config, args.user, file=args.file, delete=args.delete, generate=args.generate)
    store = PrivateStore(config.nestegg_dir / "private")
    if args.command == "list":
        return list_private(store, args.name, config)
    files = _targets(store, args.name, args.filename, args.target_version)
    name = canonicalize_name(args.name)
    for dist in files:
        if args.command == "remove":
            store.remove(name, dist.filename)
            print(f"removed {dist.filename}")
        elif args.undo:
            store.yank(name, dist.filename, None)
            print(f"un-yanked {dist.filename}")
        else:
            store.yank(name, dist.filename, args.reason)
            print(f"yanked {dist.filename}" + (f" ({args.reason})" if args.reason else ""))
    return 0


def build(config: Config, names: list[str]) -> int:
    """Build ``names`` (all source builds if empty) through a temporary mirror on a free port.

    Failed builds are retried; the exit code is 1 if any version failed.
    """
    if not config.source_builds:
        where = f" in {config.source}" if config.source else ""
        raise ConfigError(f"no source_builds are configured{where}")
    chosen = [find_source_build(config, name).name for name in names] or [
        b.name for b in config.source_builds
    ]
    # the build environments install from this mirror, so the cache serves their requirements;
    # it runs no CI of its own (no polling, no trigger)
    served = config.with_changes(
        host="127.0.0.1",
        port=0,
        ci_token=None,
        source_builds=tuple(dataclasses.replace(b, ci=None) for b in config.source_builds),
    )
    with Mirror(served) as mirror:
        builder = SourceBuilder(config, mirror.repository.private, index_url=lambda: mirror.index_url)
        failed = 0
        for name in chosen:
            outcomes = builder.build(name, retry_failed=True, refresh=True)
            # a fetch that failed is an error, even with every version built before: they may
            # not be what the repository holds now (a tag moved, a repo_url changed)
            unfetched = next((o.fetch_error for o in outcomes if o.fetch_error), "")
            if unfetched:
                print(f"error: {name}: {unfetched}", file=sys.stderr)
                failed += 1
            for outcome in outcomes:
                print(outcome.describe())
                failed += not outcome.ok
    return 1 if failed else 0


def list_private(store: PrivateStore, name: str | None, config: Config | None = None) -> int:
    """The private projects and, after them, the names each ``upstreams`` index alone serves;
    or the files of the private project ``name``."""
    upstreams = config.upstreams if config is not None else ()
    if name is None:
        for project in store.names():
            page = store.page(canonicalize_name(project))
            if page is not None:
                versions = sorted({d.version for d in page.files if d.version}, key=Version)
                print(f"{project}  {', '.join(versions)}")
        for project in store.emptied():
            print(f"{project}  (no files left; the name stays private)")
        for upstream in upstreams:
            print(f"{', '.join(upstream.projects)}  from {without_credentials(upstream.url)}")
        return 0
    page = store.page(canonicalize_name(name))
    if page is None:
        normalized = canonicalize_name(name)
        routed = next((u for u in upstreams if NamePatterns(u.projects).matches(normalized)), None)
        if routed is not None and not store.is_private(normalized):
            raise NotFound(f"{name!r} is no private project: it comes from {without_credentials(routed.url)}")
        raise _missing(store, name)
    for dist in page.files:
        yanked = "" if dist.yanked is None else f"  yanked{': ' + dist.yanked if dist.yanked else ''}"
        print(f"{dist.filename}  {dist.size} bytes  {dist.upload_time}{yanked}")
    return 0


def _missing(store: PrivateStore, name: str) -> NotFound:
    normalized = canonicalize_name(name)
    if normalized in store.emptied():
        return NotFound(
            f"private project {name!r} has no files left: each was removed, and the name stays private "
            f"(remove the folder {store.root / normalized} to let the upstream answer for it)"
        )
    return NotFound(f"no private project {name!r}")


def _targets(store: PrivateStore, name: str, filename: str | None, version: str | None) -> list[DistFile]:
    if (filename is None) == (version is None):
        raise NesteggError("name either a FILENAME or --version V")
    page = store.page(canonicalize_name(name))
    if page is None:
        raise _missing(store, name)
    if filename is not None:
        dist = page.file(filename)
        if dist is None:
            raise NotFound(f"private project {name!r} has no file {filename!r}")
        return [dist]
    wanted = parse_version(version or "")
    if wanted is None:
        raise NesteggError(f"invalid version {version!r}")
    files = [d for d in page.files if d.version is not None and parse_version(d.version) == wanted]
    if not files:
        raise NotFound(f"private project {name!r} has no files of version {version!r}")
    return files


def passwd(config: Config, user: str, *, file: str | None, delete: bool, generate: bool) -> int:
    """Add, change (``nestegg passwd USER``) or delete a user of the credentials file."""
    check_user_name(user)
    path = Path(file).expanduser() if file else config.credentials_file
    if path is None:
        raise ConfigError(
            "no credentials file: set credentials_file in nestegg.yml (nestegg: credentials_file: PATH) "
            "or pass --file"
        )
    if delete:
        if not set_password(path, user, None):
            raise NotFound(f"no user {user!r} in {path}")
        print(f"removed user {user!r} from {path}", file=sys.stderr)
        return 0
    if generate:
        password = make_token(user)
    elif not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ConfigError("no password on stdin")
    else:
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the passwords differ")
    existed = set_password(path, user, password)
    # messages on stderr: stdout holds the token alone, for TOKEN=$(nestegg passwd ci --generate)
    print(
        f"changed user {user!r} in {path}" if existed else f"added user {user!r} to {path}", file=sys.stderr
    )
    if generate:
        print(password)
    return 0
