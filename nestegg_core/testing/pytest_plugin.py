"""pytest fixtures: a caching mirror and private indexes for any project's tests.

Registered under the ``pytest11`` entry point, so installing ``tox-nestegg`` is enough::

    def test_install(nestegg_index, tmp_path):
        nestegg_index.add("my-lib", "1.0", requires_dist=["other>=2"])
        nestegg_index.add("other", "2.1")
        subprocess.run([pip, "install", "my-lib"], env=nestegg_index.env(), check=True)

Fixtures: ``nestegg_mirror`` (session; a mirror of the configured upstream, cache kept with
``--nestegg-cache-dir``), ``nestegg_index`` (function; an empty private index to publish into),
``nestegg_index_factory`` (session; makes more private indexes).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nestegg_core.installers import installer_env

if TYPE_CHECKING:
    from nestegg_core.http.types import WSGIApp
    from nestegg_core.serve.server import Mirror
    from nestegg_core.simple.models import DistFile

# The mirror (waitress, requests, the cache) is imported when a fixture makes one: every pytest
# session of a machine with nestegg installed loads this plugin.


class PrivateIndex:
    """A nestegg that serves only what is published into it (no upstream), on 127.0.0.1:0."""

    def __init__(self, root: Path, *, middleware: Callable[[WSGIApp], WSGIApp] | None = None) -> None:
        from nestegg_core.config.config import Config  # noqa: PLC0415 - see the imports
        from nestegg_core.serve.server import Mirror  # noqa: PLC0415

        self.root = root
        self.mirror = Mirror(
            Config(nestegg_dir=root / "nest", port=0, offline=True, index_url="http://127.0.0.1:9/"),
            middleware=middleware,
        )
        self._dists = root / "generated"

    @property
    def url(self) -> str:
        return self.mirror.url

    @property
    def index_url(self) -> str:
        """The Simple API root to give an installer: ``http://127.0.0.1:PORT/simple/``."""
        return self.mirror.index_url

    def start(self) -> PrivateIndex:
        self.mirror.start()
        return self

    def stop(self) -> None:
        self.mirror.stop()

    def publish(self, path: str | Path) -> DistFile:
        """Publish an existing wheel or sdist (the same bytes twice is fine)."""
        record, _ = self.mirror.repository.private.add(Path(path))
        return record

    def add(
        self,
        name: str,
        version: str,
        *,
        requires_dist: Iterable[str] = (),
        requires_python: str | None = None,
        extras: Mapping[str, Iterable[str]] | None = None,
        yanked: str | bool = False,
        wheel: bool = True,
        sdist: bool = True,
        **spec: Any,
    ) -> list[DistFile]:
        """Generate and publish a package (a wheel and an sdist by default), made without network.

        ``yanked`` may be True or a reason; ``spec`` passes on to
        :class:`nestegg_core.testing.dists.PackageSpec` (``summary``, ``files``, ``payload_size``,
        ``wheel_tag``).
        """
        from .dists import PackageSpec, make_sdist, make_wheel  # noqa: PLC0415 - see the imports

        package = PackageSpec(
            name=name,
            version=version,
            requires_dist=tuple(requires_dist),
            requires_python=requires_python,
            extras={k: tuple(v) for k, v in (extras or {}).items()},
            **spec,
        )
        paths = []
        if wheel:
            paths.append(make_wheel(package, self._dists))
        if sdist:
            paths.append(make_sdist(package, self._dists))
        records = [self.publish(path) for path in paths]
        if yanked is not False:
            reason = "" if yanked is True else str(yanked)
            records = [self.yank(r.filename, reason) for r in records]
        return records

    def publish_project(self, project: str | Path) -> list[DistFile]:
        """Build a project directory (sdist and wheel, with ``build``) and publish both.

        The build environment installs from this index's URL only, so the build requirements
        must be published here first (or be satisfiable without network).
        """
        with tempfile.TemporaryDirectory() as out:
            env = installer_env(self.index_url)
            command = [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, str(project)]
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"building {project} failed:\n{result.stdout}\n{result.stderr}")
            return [self.publish(path) for path in sorted(Path(out).iterdir())]

    def yank(self, filename: str, reason: str = "") -> DistFile:
        from nestegg_core.simple.distmeta import parse_dist_filename  # noqa: PLC0415

        name, _ = parse_dist_filename(filename)
        return self.mirror.repository.private.yank(name, filename, reason)

    def env(self, **extra: str) -> dict[str, str]:
        """Variables that point pip and uv at this index alone (see ``installer_env``)."""
        env = installer_env(self.index_url)
        env.update(extra)
        return env

    def __enter__(self) -> PrivateIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nestegg", "nestegg mirror fixtures")
    group.addoption(
        "--nestegg-cache-dir",
        metavar="DIR",
        help="cache dir of the nestegg_mirror fixture; keep it between CI jobs for warm runs",
    )
    group.addoption(
        "--nestegg-offline",
        action="store_true",
        help="the nestegg_mirror fixture serves from its cache only, never asking the upstream",
    )


@pytest.fixture(scope="session")
def nestegg_mirror(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mirror]:
    """A caching mirror of the upstream that nestegg's config (or pip's) names, for the session."""
    from nestegg_core.config.config import load_config  # noqa: PLC0415 - see the imports
    from nestegg_core.serve.server import Mirror  # noqa: PLC0415

    cache_dir = request.config.getoption("--nestegg-cache-dir")
    config = load_config(
        nestegg_dir=Path(cache_dir) if cache_dir else tmp_path_factory.mktemp("nestegg-mirror"),
        offline=True if request.config.getoption("--nestegg-offline") else None,
        port=0,
    )
    with Mirror(config.for_one_run()) as mirror:
        yield mirror


@pytest.fixture(scope="session")
def nestegg_index_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrivateIndex]]:
    """Makes started :class:`PrivateIndex` instances, all stopped at the end of the session."""
    started: list[PrivateIndex] = []

    def make(*, middleware: Callable[[WSGIApp], WSGIApp] | None = None) -> PrivateIndex:
        index = PrivateIndex(tmp_path_factory.mktemp("nestegg-index"), middleware=middleware).start()
        started.append(index)
        return index

    yield make
    for index in started:
        with contextlib.suppress(Exception):
            index.stop()


@pytest.fixture
def nestegg_index(tmp_path: Path) -> Iterator[PrivateIndex]:
    """An empty private index on 127.0.0.1 for one test; publish with ``add``/``publish``."""
    index = PrivateIndex(tmp_path / "nestegg-index").start()
    try:
        yield index
    finally:
        index.stop()
        shutil.rmtree(tmp_path / "nestegg-index", ignore_errors=True)
