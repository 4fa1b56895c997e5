"""The web interface in a real browser: headless Chromium loads each page, reads its DOM, screenshots it.

Screenshots go to ``$NESTEGG_SCREENSHOT_DIR`` when set (to keep them as CI artifacts), else to the
test's temporary directory. Skipped when no Chromium is installed (Debian: ``apt-get install -y
chromium``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from nestegg_core import Mirror
from nestegg_core.cli import main
from nestegg_core.config.config import load_config
from nestegg_core.simple.models import DistFile, ProjectPage
from nestegg_core.storage.pagestate import PageState
from nestegg_core.testing.dists import PackageSpec, make_wheel

from .conftest import MirrorFactory
from .test_ci import _commit, _seed_config, git_repo  # noqa: F401 - git_repo is a fixture

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to drive (Debian: apt-get install -y chromium)"),
]


def _load(url: str, screenshot: Path, profile: Path) -> str:
    """The DOM of ``url`` after Chromium loaded it, and a screenshot of the page in ``screenshot``."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--window-size=1200,900",
        "--dump-dom", url,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its zygote and renderers too
        process.wait()
    assert process.returncode == 0, f"chromium exited {process.returncode} loading {url}"
    assert screenshot.stat().st_size > 1000
    return out


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NESTEGG_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_pages_in_chromium(
    tmp_path: Path,
    git_repo: Path,  # noqa: F811 - the fixture imported above
    make_mirror: MirrorFactory,
    http: requests.Session,
    shots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # two real runs through the command line: one passes, the next commit fails
    _commit(git_repo, "pass")
    config_path = _seed_config(tmp_path, git_repo, "{command: tox -e check, watch: [main], interval: 0}")
    assert main(["--config", str(config_path), "ci"]) == 0
    _commit(git_repo, "fail")
    assert main(["--config", str(config_path), "ci"]) == 1
    capsys.readouterr()
    # the server of that config, with a cached project beside the source build
    config = load_config(config_path)
    mirror = make_mirror(nestegg_dir=config.nestegg_dir, source_builds=config.source_builds, offline=True)
    _cache_one(mirror, http)

    runs = http.get(f"{mirror.url}/ui/ci/my-package?format=json").json()["runs"]
    failed, passed = runs
    profile = tmp_path / "chromium-profile"
    wheel = "cached_pkg-1.0-py3-none-any.whl"
    pages = {
        "home": ("/", ["Projects", "my-package", "cached-pkg"]),
        "project": ("/ui/project/cached-pkg", ["cached-pkg", wheel, "stored here"]),
        "ci": ("/ui/ci", ["Continuous integration", "my-package", "failed", "passed"]),
        "runs": ("/ui/ci/my-package", [f"#{failed['id']}", f"#{passed['id']}", "main"]),
        "run": (f"/ui/ci/my-package/{failed['id']}", ["check: FAIL", failed["commit"], "Environments"]),
    }
    for label, (path, expected) in pages.items():
        dom = _load(mirror.url + path, shots / f"{label}.png", profile)
        for text in expected:
            assert text in dom, f"{text!r} is not on the {label} page"
    print(f"screenshots in {shots}")
    # the badge the pages show is an image Chromium can render
    _load(f"{mirror.url}/ui/badge/my-package.svg", shots / "badge.png", profile)


def _cache_one(mirror: Mirror, http: requests.Session) -> None:
    """Put a project into the mirror's cache as if it had been installed through it."""
    store = mirror.repository.store
    wheel = make_wheel(PackageSpec(name="cached-pkg", version="1.0"), mirror.config.nestegg_dir / "tmp-dists")
    record = DistFile(
        filename=wheel.name,
        hashes={"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
        size=wheel.stat().st_size,
        upload_time="2024-01-02T03:04:05.000000Z",
        url="https://example.com/" + wheel.name,
    )
    store.write_page(PageState(page=ProjectPage.build("cached-pkg", [record]), checked=time.time()))
    target = store.file_path("cached-pkg", wheel.name)  # type: ignore[arg-type]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel, target)
    store.write_record("cached-pkg", record)  # type: ignore[arg-type]
    assert http.get(f"{mirror.url}/ui/?format=json&q=cached").json()["total"] == 1
