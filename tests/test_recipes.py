"""The recipes of docs/clients.rst, run with the real clients against a fake upstream through a
nestegg mirror, each client cut off from every host but 127.0.0.1 by a proxy that refuses and
records (tests/recipes.py). Each client is installed once per version from the package index and
kept between sessions (``$NESTEGG_TEST_CLIENTS``, else the temporary directory).

``-m "not recipes"`` leaves them out of a quick run; the default run (CI) has them all.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestegg_core import Mirror
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory
from .recipes import Client, RefusingProxy, client_env, install_client, refusing_proxy, run
from .repack import repack
from .test_tox_plugin import closure

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # a dependency of build before 3.11

pytestmark = pytest.mark.recipes

# The versions the recipes were checked with: one virtualenv each, kept between sessions.
POETRY = "poetry==2.5.1"
PDM = ("pdm==2.29.4", "hishel<2")  # pdm 2.29 asks for hishel>=1.4 and breaks with 2.0
HATCH = "hatch==1.18.2"
PIPENV = "pipenv==2026.10.3"
PIP_TOOLS = "pip-tools==7.7.0"


@pytest.fixture(scope="session")
def proxy() -> Iterator[RefusingProxy]:
    with refusing_proxy() as found:
        yield found


@pytest.fixture
def refused(proxy: RefusingProxy) -> Iterator[RefusingProxy]:
    """The proxy, checked after the test: no client tried to reach anything but 127.0.0.1."""
    proxy.reset()
    yield proxy
    assert proxy.attempts() == [], "a client tried to leave 127.0.0.1"


@pytest.fixture
def site(upstream: PrivateIndex, make_mirror: MirrorFactory) -> Mirror:
    """A mirror of an upstream that has ``demo-app-lib`` 1.0, which needs ``demo-dep``."""
    upstream.add("demo-app-lib", "1.0", requires_dist=["demo-dep>=1"])
    upstream.add("demo-dep", "1.0")
    return make_mirror()


def asked_upstream(faults: Faults, *names: str) -> None:
    """The fake upstream was asked for each project's page (through the mirror, as nothing else
    knows its address)."""
    for name in names:
        assert faults.count(f"/simple/{name}/") >= 1, f"the upstream was not asked for {name}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_proxy_refuses_and_records_a_request_that_leaves(proxy: RefusingProxy, tmp_path: Path) -> None:
    """What makes the recipes' proof: a client sent anywhere but 127.0.0.1 fails, and is seen."""
    python = make_venv(tmp_path / "venv")
    proxy.reset()
    env = client_env(tmp_path / "home", proxy, index_url="https://nestegg.example.invalid/simple/")
    done = subprocess.run([python, "-m", "pip", "install", "--retries", "0", "demo-app-lib"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0
    assert [a.rsplit(" ", 1)[0] for a in proxy.attempts()] == ["CONNECT nestegg.example.invalid:443"]
    proxy.reset()


# --- pip -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pip.conf", "PIP_INDEX_URL"])
def test_pip(how: str, site: Mirror, faults: Faults, refused: RefusingProxy, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    env = client_env(tmp_path / "home", refused)
    if how == "pip.conf":
        conf = write(tmp_path / "pip.conf", f"[global]\nindex-url = {site.index_url}\n")
        env["PIP_CONFIG_FILE"] = str(conf)
    else:
        env["PIP_INDEX_URL"] = site.index_url
    run([python, "-m", "pip", "install", "--no-cache-dir", "demo-app-lib"], env=env, cwd=tmp_path)
    shown = run([python, "-m", "pip", "show", "demo-app-lib", "demo-dep"], env=env, cwd=tmp_path).stdout
    assert "Name: demo-app-lib" in shown
    assert "Name: demo-dep" in shown
    asked_upstream(faults, "demo-app-lib", "demo-dep")


# --- uv ------------------------------------------------------------------------------------------


def uv_project(root: Path, index_url: str) -> Path:
    write(
        root / "pyproject.toml",
        f"""\
[project]
name = "demo-app"
version = "0.1"
requires-python = ">=3.10"
dependencies = ["demo-app-lib"]

[tool.uv]
package = false

[[tool.uv.index]]
name = "nestegg"
url = "{index_url}"
default = true
""",
    )
    return root


def uv_exe() -> str:
    found = find_uv()
    if found is None:
        pytest.skip("uv is not installed (it is a test dependency: pip install -e '.[test]')")
    return found


def test_uv_lock_and_sync(site: Mirror, faults: Faults, refused: RefusingProxy, tmp_path: Path) -> None:
    uv = uv_exe()
    project = uv_project(tmp_path / "app", site.index_url)
    env = client_env(tmp_path / "home", refused, keep_uv_config=True, UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    run([uv, "lock"], env=env, cwd=project)
    lock = tomllib.loads((project / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    assert packages["demo-dep"]["source"] == {"registry": site.index_url}
    assert packages["demo-app-lib"]["wheels"][0]["url"].startswith(site.url + "/")
    run([uv, "sync", "--locked"], env=env, cwd=project)
    run([project / ".venv" / "bin" / "python", "-c", "import demo_app_lib, demo_dep"], env=env, cwd=project)
    asked_upstream(faults, "demo-app-lib", "demo-dep")


def test_uv_default_index_variable(
    site: Mirror, faults: Faults, refused: RefusingProxy, tmp_path: Path
) -> None:
    uv = uv_exe()
    python = make_venv(tmp_path / "venv")
    env = client_env(tmp_path / "home", refused, UV_DEFAULT_INDEX=site.index_url)
    run([uv, "pip", "install", "--no-cache", "--python", python, "demo-app-lib"], env=env, cwd=tmp_path)
    run([python, "-c", "import demo_app_lib, demo_dep"], env=env, cwd=tmp_path)
    asked_upstream(faults, "demo-app-lib", "demo-dep")


def test_uv_lock_moves_between_index_urls(
    site: Mirror, make_mirror: MirrorFactory, refused: RefusingProxy, tmp_path: Path
) -> None:
    """The index URL comes from the environment: a lock file made through one URL is checked,
    synced and locked again where another is set."""
    uv = uv_exe()
    other = make_mirror(nestegg_dir=tmp_path / "other-nest")  # the same upstream under another URL
    project = write(
        tmp_path / "app" / "pyproject.toml",
        '[project]\nname = "demo-app"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["demo-app-lib"]\n\n[tool.uv]\npackage = false\n',
    ).parent
    env = client_env(tmp_path / "home", refused, keep_uv_config=True, UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    run([uv, "lock"], env=dict(env, UV_DEFAULT_INDEX=site.index_url), cwd=project)
    locked = (project / "uv.lock").read_text()
    moved = dict(env, UV_DEFAULT_INDEX=other.index_url)
    # another index URL: the lock file is out of date for --locked and --check...
    check = subprocess.run([uv, "lock", "--check"], env=moved, cwd=project, capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    assert check.returncode != 0
    assert "needs to be updated" in check.stderr
    # ...--frozen installs from the URLs it records, whatever the index...
    run([uv, "sync", "--frozen"], env=moved, cwd=project)
    assert (project / "uv.lock").read_text() == locked
    run([project / ".venv" / "bin" / "python", "-c", "import demo_app_lib, demo_dep"], env=env, cwd=project)
    # ...and locking again changes the URLs only: same versions, hashes, sizes and upload times
    run([uv, "lock"], env=moved, cwd=project)
    assert (project / "uv.lock").read_text() == locked.replace(site.url + "/", other.url + "/")


# --- poetry --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def poetry() -> Client:
    return install_client(POETRY)


def test_poetry(poetry: Client, site: Mirror, faults: Faults, refused: RefusingProxy, tmp_path: Path) -> None:
    project = write(
        tmp_path / "app" / "pyproject.toml",
        '[project]\nname = "demo-app"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["demo-app-lib"]\n\n[tool.poetry]\npackage-mode = false\n',
    ).parent
    # the project's environment in .venv, to look into it below
    env = client_env(tmp_path / "home", refused, POETRY_VIRTUALENVS_IN_PROJECT="true")
    exe = poetry.bin("poetry")
    run([exe, "source", "add", "--priority=primary", "nestegg", site.index_url], env=env, cwd=project)
    sources = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["poetry"]["source"]
    assert sources == [{"name": "nestegg", "url": site.index_url, "priority": "primary"}]
    run([exe, "lock"], env=env, cwd=project)
    lock = tomllib.loads((project / "poetry.lock").read_text())
    # poetry records the source's URL without its trailing slash
    recorded = site.index_url.rstrip("/")
    assert {p["name"]: p["source"]["url"] for p in lock["package"]} == {
        "demo-app-lib": recorded, "demo-dep": recorded,
    }  # fmt: skip
    run([exe, "install"], env=env, cwd=project)
    run([project / ".venv" / "bin" / "python", "-c", "import demo_app_lib, demo_dep"], env=env, cwd=project)
    asked_upstream(faults, "demo-app-lib", "demo-dep")


# --- pdm -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pdm() -> Client:
    return install_client(*PDM)


def pdm_project(root: Path, index_url: str, *, source_name: str) -> Path:
    write(
        root / "pyproject.toml",
        f"""\
[project]
name = "demo-app"
version = "0.1"
requires-python = ">=3.10"
dependencies = ["demo-app-lib"]

[tool.pdm]
distribution = false

[[tool.pdm.source]]
name = "{source_name}"
url = "{index_url}"
""",
    )
    return root


def test_pdm(pdm: Client, site: Mirror, faults: Faults, refused: RefusingProxy, tmp_path: Path) -> None:
    project = pdm_project(tmp_path / "app", site.index_url, source_name="pypi")
    env = client_env(tmp_path / "home", refused)
    exe = pdm.bin("pdm")
    run([exe, "lock"], env=env, cwd=project)
    lock = tomllib.loads((project / "pdm.lock").read_text())
    assert sorted(p["name"] for p in lock["package"]) == ["demo-app-lib", "demo-dep"]
    run([exe, "install"], env=env, cwd=project)
    run([project / ".venv" / "bin" / "python", "-c", "import demo_app_lib, demo_dep"], env=env, cwd=project)
    asked_upstream(faults, "demo-app-lib", "demo-dep")


def test_pdm_source_of_another_name_still_asks_the_public_index(
    pdm: Client, site: Mirror, proxy: RefusingProxy, tmp_path: Path
) -> None:
    project = pdm_project(tmp_path / "app", site.index_url, source_name="nestegg")
    env = client_env(tmp_path / "home", proxy)
    proxy.reset()
    done = subprocess.run([pdm.bin("pdm"), "lock"], env=env, cwd=project, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "No request may leave 127.0.0.1" in done.stdout + done.stderr
    assert [a.split()[0] for a in proxy.attempts()] == ["CONNECT"]  # to the public index's host
    proxy.reset()


# --- hatch ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hatch() -> Client:
    return install_client(HATCH)


@pytest.fixture(scope="session")
def hatchling_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """hatchling and what it needs, rebuilt from this interpreter: the project's build backend."""
    out = tmp_path_factory.mktemp("hatchling")
    return [repack(name, out) for name in closure(["hatchling"])]


def hatch_project(root: Path, env_vars: str = "") -> Path:
    write(root / "src" / "demo_app" / "__init__.py", "")
    write(
        root / "pyproject.toml",
        f"""\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "demo-app"
version = "0.1"
requires-python = ">=3.10"
dependencies = ["demo-app-lib"]

[tool.hatch.envs.default]
dev-mode = false
{env_vars}""",
    )
    return root


HATCH_ENV_VARS = """
[tool.hatch.envs.default.env-vars]
PIP_INDEX_URL = "{index_url}"
"""


def test_hatch(
    hatch: Client,
    hatchling_wheels: list[Path],
    upstream: PrivateIndex,
    site: Mirror,
    faults: Faults,
    refused: RefusingProxy,
    tmp_path: Path,
) -> None:
    for wheel in hatchling_wheels:  # the build backend, from the upstream as for a user
        upstream.publish(wheel)
    project = hatch_project(tmp_path / "app")
    env = client_env(
        tmp_path / "home", refused, PIP_INDEX_URL=site.index_url, UV_DEFAULT_INDEX=site.index_url
    )
    exe = hatch.bin("hatch")
    run([exe, "run", "python", "-c", "import demo_app, demo_app_lib, demo_dep"], env=env, cwd=project)
    run([exe, "build"], env=env, cwd=project)
    assert sorted(p.name for p in (project / "dist").iterdir()) == [
        "demo_app-0.1-py3-none-any.whl", "demo_app-0.1.tar.gz",
    ]  # fmt: skip
    asked_upstream(faults, "hatchling", "demo-app-lib", "demo-dep")


def test_hatch_env_vars_do_not_reach_its_build_environment(
    hatch: Client,
    hatchling_wheels: list[Path],
    upstream: PrivateIndex,
    site: Mirror,
    proxy: RefusingProxy,
    tmp_path: Path,
) -> None:
    for wheel in hatchling_wheels:
        upstream.publish(wheel)
    project = hatch_project(tmp_path / "app", HATCH_ENV_VARS.format(index_url=site.index_url))
    env = client_env(tmp_path / "home", proxy, UV_HTTP_RETRIES="0")  # hatch build runs uv
    exe = hatch.bin("hatch")
    proxy.reset()
    # the environment's own installs (and the project's, built by pip) follow env-vars...
    run([exe, "run", "python", "-c", "import demo_app, demo_app_lib, demo_dep"], env=env, cwd=project)
    assert proxy.attempts() == []
    # ...hatch build's environment does not: it asks the public index
    done = subprocess.run([exe, "build"], env=env, cwd=project, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode != 0
    assert proxy.attempts() != []
    assert {a.split()[0] for a in proxy.attempts()} == {"CONNECT"}
    proxy.reset()


# --- pip-tools -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pip_tools() -> Client:
    return install_client(PIP_TOOLS)


def test_pip_tools(
    pip_tools: Client, site: Mirror, faults: Faults, refused: RefusingProxy, tmp_path: Path
) -> None:
    write(tmp_path / "requirements.in", "demo-app-lib\n")
    env = client_env(tmp_path / "home", refused)
    compile_ = [pip_tools.bin("pip-compile"), "--index-url", site.index_url, "--generate-hashes",
                "--output-file", "requirements.txt", "requirements.in"]  # fmt: skip
    run(compile_, env=env, cwd=tmp_path)
    pinned = (tmp_path / "requirements.txt").read_text()
    assert f"--index-url {site.index_url}" in pinned
    for name in ("demo-app-lib", "demo-dep"):
        assert re.search(rf"^{name}==1\.0 \\\n(    --hash=sha256:[0-9a-f]{{64}}.*\n){{2}}", pinned, re.M), (
            pinned
        )
    # the hashes come from the JSON API; pip resolves small wheels from the wheels themselves (their
    # metadata would cost as much: ``pip_lists_metadata``), which the mirror fetches once and keeps
    fetched = [seen.path for seen in faults.files()]
    assert sorted(fetched) == sorted(set(fetched))
    assert all(path.endswith(".whl") for path in fetched)
    asked_upstream(faults, "demo-app-lib", "demo-dep")
    python = make_venv(tmp_path / "venv")
    faults.reset()
    run([python, "-m", "pip", "install", "--no-cache-dir", "-r", "requirements.txt"], env=env, cwd=tmp_path)
    run([python, "-c", "import demo_app_lib, demo_dep"], env=env, cwd=tmp_path)
    assert faults.files() == []  # the wheels pip-compile read are the mirror's now


# --- pipenv --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pipenv() -> Client:
    return install_client(PIPENV)


def pipenv_project(root: Path, index_url: str) -> Path:
    write(
        root / "Pipfile",
        f'[[source]]\nname = "nestegg"\nurl = "{index_url}"\nverify_ssl = true\n\n'
        '[packages]\ndemo-app-lib = "*"\n',
    )
    return root


def test_pipenv(pipenv: Client, site: Mirror, faults: Faults, refused: RefusingProxy, tmp_path: Path) -> None:
    project = pipenv_project(tmp_path / "app", site.index_url)
    # without PIPENV_PYPI_MIRROR, pipenv 2026.10 now and then also asks the public index (the
    # proxy saw it in some runs of lock and sync, not in others): the variable replaces it
    env = client_env(
        tmp_path / "home", refused, PIPENV_PYPI_MIRROR=site.index_url, PIPENV_VENV_IN_PROJECT="1"
    )
    exe = pipenv.bin("pipenv")
    run([exe, "--python", sys.executable, "lock"], env=env, cwd=project)
    lock = json.loads((project / "Pipfile.lock").read_text())
    assert lock["_meta"]["sources"] == [{"name": "nestegg", "url": site.index_url, "verify_ssl": True}]
    assert {name: len(entry["hashes"]) for name, entry in lock["default"].items()} == {
        "demo-app-lib": 2, "demo-dep": 2,
    }  # fmt: skip
    run([exe, "sync"], env=env, cwd=project)
    run([project / ".venv" / "bin" / "python", "-c", "import demo_app_lib, demo_dep"], env=env, cwd=project)
    asked_upstream(faults, "demo-app-lib", "demo-dep")


# --- twine and uv publish ------------------------------------------------------------------------


@pytest.fixture
def uploads(upstream: PrivateIndex, make_mirror: MirrorFactory, tmp_path: Path) -> tuple[Mirror, str]:
    """A mirror that takes uploads, and a token made as the recipe says: ``nestegg passwd ci
    --generate`` with the mirror's nestegg.yml."""
    config = write(tmp_path / "nestegg.yml", "nestegg:\n  credentials_file: credentials\n")
    mirror = make_mirror(credentials_file=tmp_path / "credentials")
    command = [sys.executable, "-m", "nestegg_core", "--config", str(config), "passwd", "ci", "--generate"]
    token = run(command, env=installer_env(), cwd=tmp_path).stdout.strip()
    return mirror, token


def dist_of(name: str, out: Path) -> Path:
    return make_wheel(PackageSpec(name=name, version="1.0"), out)


def installs_from(mirror: Mirror, name: str, tmp_path: Path, proxy: RefusingProxy) -> None:
    python = make_venv(tmp_path / "venv")
    env = client_env(tmp_path / "home", proxy, index_url=mirror.index_url)
    run([python, "-m", "pip", "install", "--no-cache-dir", name], env=env, cwd=tmp_path)


def test_twine(uploads: tuple[Mirror, str], refused: RefusingProxy, tmp_path: Path) -> None:
    mirror, token = uploads
    dist_of("demo-uploaded", tmp_path / "dist")
    env = client_env(
        tmp_path / "home", refused,
        TWINE_REPOSITORY_URL=f"{mirror.url}/legacy/", TWINE_USERNAME="__token__", TWINE_PASSWORD=token,
    )  # fmt: skip
    run([sys.executable, "-m", "twine", "upload", "--non-interactive", "dist/*"], env=env, cwd=tmp_path)
    installs_from(mirror, "demo-uploaded", tmp_path, refused)


def test_uv_publish(uploads: tuple[Mirror, str], refused: RefusingProxy, tmp_path: Path) -> None:
    mirror, token = uploads
    dist_of("demo-uv-uploaded", tmp_path / "dist")
    env = client_env(
        tmp_path / "home", refused, UV_PUBLISH_URL=f"{mirror.url}/legacy/", UV_PUBLISH_TOKEN=token
    )
    run([uv_exe(), "publish", "dist/*"], env=env, cwd=tmp_path)
    installs_from(mirror, "demo-uv-uploaded", tmp_path, refused)


# --- the page says what the tests run ------------------------------------------------------------

DOCS_URL = "https://nestegg.example.com/simple/"


@pytest.mark.parametrize(
    "snippet",
    [
        f"[global]\n    index-url = {DOCS_URL}",
        f"export PIP_INDEX_URL={DOCS_URL}",
        f'[[tool.uv.index]]\n    name = "nestegg"\n    url = "{DOCS_URL}"\n    default = true',
        f"export UV_DEFAULT_INDEX={DOCS_URL}",
        f"poetry source add --priority=primary nestegg {DOCS_URL}",
        f'[[tool.poetry.source]]\n    name = "nestegg"\n    url = "{DOCS_URL}"\n    priority = "primary"',
        f'[[tool.pdm.source]]\n    name = "pypi"\n    url = "{DOCS_URL}"',
        "[tool.hatch.envs.default.env-vars]",
        f"pip-compile --index-url {DOCS_URL} --generate-hashes \\\n"
        "        --output-file requirements.txt requirements.in",
        f'[[source]]\n    name = "nestegg"\n    url = "{DOCS_URL}"\n    verify_ssl = true',
        f"export PIPENV_PYPI_MIRROR={DOCS_URL}",
        "TOKEN=$(nestegg passwd ci --generate)",
        "export TWINE_USERNAME=__token__",
        "twine upload --non-interactive dist/*",
        'export UV_PUBLISH_TOKEN="$TOKEN"',
        "uv publish dist/*",
    ],
)
def test_the_page_shows_what_the_recipes_run(snippet: str) -> None:
    page = (Path(__file__).parent.parent / "docs" / "clients.rst").read_text()
    assert snippet in page
