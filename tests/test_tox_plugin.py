"""Real tox, in a subprocess, with the plugin installed, against the fake upstream.

The sample projects build with real setuptools and hatchling, repacked from this interpreter into
the fake upstream (no network anywhere). Every environment tox makes installs through the plugin's
mirror: the fake upstream sees nothing but the mirror's requests. The user cache (nestegg's cache,
pip's and uv's) lives in the test's directory.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import nestegg_core
from nestegg_core import __version__
from nestegg_core.testing import installer_env
from nestegg_core.testing.pytest_plugin import PrivateIndex
from nestegg_core.toxrun.run import PORT_FILE

from .conftest import Faults
from .loopback import Answer, RawUpstream
from .repack import repack
from .test_builds import GitRepo, write_tree

pytestmark = pytest.mark.slow

#: the build backends of the sample projects, and pip for `uv venv --seed`
BACKENDS = ("setuptools", "hatchling", "pip")
#: lines tox prints when it runs an installer for dependencies (not for the project itself)
DEPENDENCY_INSTALL = re.compile(r"^\S+: (install_deps|install_package_deps|install_requires|"
                                r"install_dependency[-_]groups|requires)\S*> ", re.MULTILINE)  # fmt: skip
MIRROR_LINE = re.compile(r"nestegg serving (http://127\.0\.0\.1:(\d+)/simple/)")
TIMEOUT = 240


def closure(names: Sequence[str]) -> list[str]:
    """``names`` and everything they require here (no extras), as installed in this interpreter."""
    seen: dict[str, None] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen[name] = None
        for raw in importlib.metadata.requires(name) or ():
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen)


@pytest.fixture(scope="session")
def backend_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Wheels of setuptools, hatchling and their requirements, rebuilt from what is installed."""
    out = tmp_path_factory.mktemp("backends")
    return [repack(name, out) for name in closure(BACKENDS)]


@pytest.fixture(scope="session")
def app_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """virtualenv's app data (its seed wheels, unpacked once), shared: it is no index access."""
    return tmp_path_factory.mktemp("virtualenv-app-data")


@pytest.fixture
def index(upstream: PrivateIndex, backend_wheels: list[Path]) -> PrivateIndex:
    """The fake upstream with build backends and the sample projects' dependencies."""
    for wheel in backend_wheels:
        upstream.publish(wheel)
    upstream.add("wheel", "0.45.1", sdist=False)  # seeded by uv, never used
    upstream.add("tinydep", "1.0")
    upstream.add("tinydep", "1.1")
    upstream.add("extradep", "2.0")
    upstream.add("groupdep", "3.0")
    upstream.add("depdep", "4.0", requires_dist=["tinydep>=1.1"])
    return upstream


@dataclass
class Outcome:
    code: int
    out: str

    @property
    def mirror_url(self) -> str:
        found = MIRROR_LINE.findall(self.out)
        assert len(found) == 1, self.out
        return str(found[0][0])

    @property
    def dependency_installs(self) -> list[str]:
        return DEPENDENCY_INSTALL.findall(self.out)


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tox", *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def tox(self, *args: str, code: int = 0) -> Outcome:
        process = self.start(*args)
        out, _ = process.communicate(timeout=TIMEOUT)
        outcome = Outcome(process.returncode, out)
        assert outcome.code == code, out
        return outcome

    def info(self, env: str) -> object:
        return json.loads((self.root / ".tox" / env / ".tox-info.json").read_text())


def tox_env(tmp_path: Path, index: PrivateIndex, app_data: Path, runner: str) -> dict[str, str]:
    """The environment of a tox run: the user's index is the fake upstream, caches are the test's."""
    env = installer_env(
        index.index_url,
        HOME=str(tmp_path / "home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        VIRTUALENV_OVERRIDE_APP_DATA=str(app_data),
        NO_COLOR="1",
    )
    for name in ("NESTEGG_CONFIG", "TOX_NO_NESTEGG", "TOX_NESTEGG_CONFIG", "PYTHONPATH"):
        env.pop(name, None)
    if os.environ.get("PYTHONPATH"):  # a checkout run without installing (as CI may)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if runner == "pip":
        env["TOX_DISABLED_EXTERNAL_PLUGINS"] = "tox-uv"  # tox-uv would be the default runner
    return env


PYPROJECT = {
    "setuptools": """\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [tool.setuptools]
        packages = ["sample"]
        """,
    "hatchling": """\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [tool.hatch.build.targets.wheel]
        packages = ["sample"]
        """,
}
PROJECT = """\
    [project]
    name = "sample"
    version = "0.1"
    dependencies = ["tinydep>=1"]

    [project.optional-dependencies]
    fancy = ["extradep"]

    [dependency-groups]
    test = ["groupdep"]
    """
TOX_INI = textwrap.dedent("""\
    [tox]
    env_list = sdist, wheel

    [testenv]
    commands = python -c "import sample, tinydep, extradep, groupdep; print('imported', tinydep.__version__)"
    extras = fancy
    dependency_groups = test

    [testenv:wheel]
    package = wheel
    # tox-uv: `uv venv --seed` installs pip (and setuptools and wheel) from the index
    uv_seed = true
    extras =
    dependency_groups =
    deps = depdep
    commands = python -c "import sample, tinydep, depdep; print('imported', tinydep.__version__)"
    """)


def write_project(root: Path, backend: str, tox_ini: str = TOX_INI) -> Path:
    (root / "sample").mkdir(parents=True)
    (root / "sample" / "__init__.py").write_text("")
    pyproject = textwrap.dedent(PYPROJECT[backend]) + "\n" + textwrap.dedent(PROJECT)
    (root / "pyproject.toml").write_text(pyproject)
    (root / "tox.ini").write_text(tox_ini)
    return root


MakeProject = Callable[..., Project]


@pytest.fixture
def make_project(tmp_path: Path, index: PrivateIndex, app_data: Path) -> MakeProject:
    """Writes a sample project: ``make_project(backend, runner, name=..., tox_ini=...)``."""

    def make(backend: str = "setuptools", runner: str = "pip", *, name: str = "project",
             tox_ini: str = TOX_INI) -> Project:  # fmt: skip
        root = write_project(tmp_path / name, backend, tox_ini)
        return Project(root, tox_env(tmp_path, index, app_data, runner))

    return make


def agents(faults: Faults) -> set[str]:
    """Who asked the upstream: ``nestegg``, ``pip``, ``uv``..."""
    return {s.headers.get("user-agent", "").split("/")[0] for s in faults.seen}


def only_the_mirror_asked(faults: Faults) -> None:
    assert agents(faults) == {"nestegg"}, sorted({s.headers.get("user-agent", "") for s in faults.seen})


# the main path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runner", "backend", "command"),
    [
        ("pip", "setuptools", "run"),
        ("pip", "hatchling", "p"),
        ("uv", "hatchling", "run"),
        ("uv", "setuptools", "p"),
    ],
)
def test_every_install_goes_through_the_mirror_and_reruns_reinstall_nothing(
    make_project: MakeProject, index: PrivateIndex, faults: Faults, runner: str, backend: str, command: str
) -> None:
    project = make_project(backend, runner)
    args = ("p", "--parallel-live") if command == "p" else (command,)  # -o: show the commands' output
    first = project.tox(*args)
    assert first.out.count("imported 1.1") == 2, first.out
    assert first.dependency_installs, first.out
    only_the_mirror_asked(faults)
    asked = {s.path for s in faults.seen}
    seeded = ("pip", "wheel") if runner == "uv" else ()  # virtualenv seeds from wheels of its own
    for name in ("tinydep", "extradep", "groupdep", "depdep", backend, *seeded):
        assert f"/simple/{name}/" in asked, sorted(asked)
    url = first.mirror_url
    assert (project.root / ".tox" / PORT_FILE).read_text().strip() == url.split(":")[2].split("/")[0]
    infos = {env: project.info(env) for env in ("sdist", "wheel")}

    faults.reset()
    second = project.tox(*args)
    assert second.mirror_url == url  # the same URL, so tox sees unchanged installs...
    assert second.dependency_installs == [], second.out  # ...and reinstalls nothing
    assert {env: project.info(env) for env in ("sdist", "wheel")} == infos
    only_the_mirror_asked(faults) if faults.seen else None


@pytest.mark.parametrize("runner", ["pip", "uv"])
def test_a_warm_cache_installs_with_the_upstream_gone(
    make_project: MakeProject, index: PrivateIndex, faults: Faults, runner: str
) -> None:
    project = make_project("hatchling" if runner == "pip" else "setuptools", runner)
    project.tox("run")
    index.stop()
    # recreate every environment, and make the mirror ask the (gone) upstream about every page
    again = project.tox("run", "-r", "--nestegg-refresh")
    assert again.out.count("imported 1.1") == 2, again.out
    assert again.dependency_installs, again.out


def test_no_nestegg_leaves_installs_alone(make_project: MakeProject, faults: Faults) -> None:
    project = make_project(tox_ini=SKIP_INSTALL.format(core="", deps="depdep", set_env=""))
    outcome = project.tox("run", "--no-nestegg")
    assert "nestegg serving" not in outcome.out
    assert agents(faults) == {"pip"}
    assert not (project.root / ".tox" / PORT_FILE).exists()

    # an environment can opt out on its own
    faults.reset()
    (project.root / "tox.ini").write_text(
        SKIP_INSTALL.format(core="", deps="depdep\nnestegg = false", set_env="")
    )
    outcome = project.tox("run", "-r")
    assert "nestegg serving" in outcome.out
    assert agents(faults) == {"pip"}


# commands, settings, failures --------------------------------------------------------------

SKIP_INSTALL = textwrap.dedent("""\
    [tox]
    env_list = py
    {core}

    [testenv]
    skip_install = true
    deps = {deps}
    set_env = {set_env}
    commands = python -c "import sys; print('ran', sys.prefix)"
    """)


def test_commands_that_install_nothing_start_no_mirror(make_project: MakeProject, faults: Faults) -> None:
    project = make_project(tox_ini=SKIP_INSTALL.format(core="", deps="tinydep", set_env=""))
    for args in (["l"], ["c", "-e", "py", "-k", "set_env"], ["de"], ["-l"], ["--version"]):
        outcome = project.tox(*args)
        assert "nestegg serving" not in outcome.out, args
        assert "127.0.0.1" not in outcome.out, args
    assert f"tox-nestegg-{__version__}" in outcome.out  # the plugin is registered
    assert not (project.root / ".tox" / PORT_FILE).exists()
    assert faults.seen == []


def test_a_mirror_that_cannot_start_fails_the_run_saying_how_to_disable(make_project: MakeProject) -> None:
    project = make_project(tox_ini=SKIP_INSTALL.format(core="", deps="", set_env=""))
    outcome = project.tox("run", "--nestegg-config", "missing.yml", code=254)
    assert "nestegg: config file 'missing.yml' does not exist" in outcome.out
    assert "--no-nestegg or TOX_NO_NESTEGG=1" in outcome.out
    # the way out works
    project.env["TOX_NO_NESTEGG"] = "1"
    project.tox("run", "--nestegg-config", "missing.yml")


def test_settings_in_tox_config(make_project: MakeProject, tmp_path: Path, faults: Faults) -> None:
    (tmp_path / "elsewhere").mkdir()
    core = "nestegg_config = ci/nestegg.yml\nnestegg_offline = true"
    project = make_project(tox_ini=SKIP_INSTALL.format(core=core, deps="", set_env=""))
    (project.root / "ci").mkdir()
    (project.root / "ci" / "nestegg.yml").write_text(f"nestegg:\n  nestegg_dir: {tmp_path / 'elsewhere'}\n")
    outcome = project.tox("run")
    assert f"(offline; cache {tmp_path / 'elsewhere'})" in outcome.out
    # tox.toml: the keys are top-level settings
    (project.root / "tox.ini").unlink()
    (project.root / "tox.toml").write_text(TOX_TOML.format(core="nestegg = false"))
    assert "nestegg serving" not in project.tox("run").out
    (project.root / "tox.toml").write_text(TOX_TOML.format(core="nestegg_offline = true"))
    assert "(offline; cache " in project.tox("run").out
    assert faults.seen == []


@pytest.mark.parametrize(("runner", "start_in"), [("pip", "."), ("uv", "."), ("pip", "sample")])
def test_a_nestegg_yml_for_a_served_mirror_serves_the_tox_run_wherever_it_starts(
    make_project: MakeProject, tmp_path: Path, faults: Faults, runner: str, start_in: str
) -> None:
    # written for `nestegg serve` behind nginx and a proxy: the tox run's mirror sends its files
    # itself, at its own URL, from the loopback; found beside tox.ini though tox starts below it
    project = make_project("hatchling", runner)
    cache = tmp_path / "project-cache"
    (project.root / "nestegg.yml").write_text(
        "nestegg:\n  host: 0.0.0.0\n  public_url: http://127.0.0.1:9/\n  sendfile: x-accel-redirect\n"
        f"  nestegg_dir: {cache}\n"
    )
    process = subprocess.run(
        [sys.executable, "-m", "tox", "run", "-e", "sdist"],
        cwd=project.root / start_in,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    outcome = Outcome(process.returncode, process.stdout)
    assert outcome.code == 0, outcome.out
    assert f"cache {cache})" in outcome.out
    assert outcome.out.count("imported 1.1") == 1, outcome.out
    assert any(cache.glob("mirror/*/files/tinydep/tinydep-*")), sorted(cache.rglob("*"))
    only_the_mirror_asked(faults)


TOX_TOML = """\
env_list = ["py"]
{core}

[env_run_base]
skip_install = true
commands = [["python", "-c", "print('ran')"]]
"""


def test_an_index_in_set_env_becomes_an_upstream_of_the_mirror(
    make_project: MakeProject, tmp_path: Path, faults: Faults
) -> None:
    other_faults = Faults()
    other = PrivateIndex(tmp_path / "other", middleware=other_faults).start()
    try:
        other.add("onlyelsewhere", "1.0")
        ini = SKIP_INSTALL.format(core="", deps="onlyelsewhere", set_env=f"PIP_INDEX_URL = {other.index_url}")
        project = make_project(tox_ini=ini)
        outcome = project.tox("run")
        assert "ran" in outcome.out
        assert other_faults.count("/simple/onlyelsewhere/") == 1
        only_the_mirror_asked(other_faults)
        assert faults.count("/simple/onlyelsewhere/") == 0  # the main upstream was not asked
        recorded = json.dumps(project.info("py"))
        assert "/upstreams/" in recorded
        assert other.index_url not in recorded  # pip never saw the index itself
    finally:
        other.stop()


def test_two_tox_runs_at_once_share_the_user_cache(make_project: MakeProject, faults: Faults) -> None:
    ini = SKIP_INSTALL.format(core="", deps="depdep\n    extradep", set_env="")
    one = make_project(tox_ini=ini, name="one")
    two = make_project(tox_ini=ini, name="two")
    for project in (one, two):  # both want the same port: one of them must fall back
        (project.root / ".tox").mkdir()
        (project.root / ".tox" / PORT_FILE).write_text(str(one_free_port()))
    # the upstream holds every request until both mirrors have asked it something: both are up at once
    faults.gate = threading.Event()
    processes = [one.start("run"), two.start("run")]
    deadline = time.monotonic() + 60
    while faults.count() < 2 and time.monotonic() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.05)
    faults.gate.set()
    outcomes = []
    for process in processes:
        out, _ = process.communicate(timeout=TIMEOUT)
        outcomes.append(Outcome(process.returncode, out))
    assert [o.code for o in outcomes] == [0, 0], [o.out for o in outcomes]
    assert outcomes[0].mirror_url != outcomes[1].mirror_url
    only_the_mirror_asked(faults)
    # one cache: each distribution file came from the upstream once (the other process waited for it;
    # small PEP 658 .metadata files are only locked per process, and may be fetched by both)
    files = [s.path for s in faults.seen if s.path.startswith("/files/") and s.path.endswith(".whl")]
    assert sorted(files) == sorted(set(files)), files
    assert "/files/depdep/depdep-4.0-py3-none-any.whl" in files


def one_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_configured_source_build_is_built_before_environments_install(
    make_project: MakeProject, tmp_path: Path, faults: Faults
) -> None:
    repo = GitRepo(tmp_path / "repos" / "my_package")
    write_tree(repo.path, "my_package", "1.0.0")
    commit = repo.commit("1.0.0", tag="v1.0.0")
    ini = SKIP_INSTALL.format(core="", deps="my-package==1.0.0\n    tinydep", set_env="")
    project = make_project(tox_ini=ini)
    # found by the core's lookup (the current directory), its upstream is the user's PIP_INDEX_URL
    (project.root / "nestegg.yml").write_text(
        textwrap.dedent(f"""\
        nestegg:
          source_builds:
            - name: my_package
              repo_type: git
              repo_url: {repo.path}
              versions:
                - version: 1.0.0
                  tag: v1.0.0
        """)
    )
    first = project.tox("run")
    line = f"nestegg: source build my-package: 1.0.0 built (v1.0.0 at {commit[:12]})"
    assert line in first.out
    assert first.out.index(line) < first.out.index("install_deps>")
    assert faults.count("/simple/my-package/") == 0  # a private name never reaches the upstream
    only_the_mirror_asked(faults)

    second = project.tox("run", "-r")
    assert f"nestegg: source build my-package: 1.0.0 current (v1.0.0 at {commit[:12]})" in second.out


# offline as users meet it ------------------------------------------------------------------

#: the sample project's own dependency (tinydep) and these: a dozen names from the fake upstream
DOZEN = [f"dep{i:02d}" for i in range(1, 11)] + ["depdep"]
DNS_FAILS = "http://nestegg-test.invalid/simple/"
OFFLINE_INI = f"""\
[tox]
env_list = py

[testenv]
package = wheel
deps =
{"".join(f"    {name}{chr(10)}" for name in DOZEN)}\
# an extra index that never resolves: mirrored under /upstreams/<key>/ like the user's own
set_env =
    PIP_EXTRA_INDEX_URL = {DNS_FAILS}
    UV_INDEX = {DNS_FAILS}
commands = python -c "import sample, tinydep, dep10, depdep; print('imported', tinydep.__version__)"
"""
OUTAGE_LINE = re.compile(r"^.*nestegg: upstream (\S+) unreachable \(([^)]+)\): .*$", re.MULTILINE)


def outages(outcome: Outcome) -> list[tuple[str, str]]:
    """The upstreams the run said it could not reach, with the reason, sorted."""
    return sorted((m.group(1), m.group(2)) for m in OUTAGE_LINE.finditer(outcome.out))


@pytest.mark.parametrize(("runner", "ttl"), [("pip", None), ("pip", 0), ("uv", None), ("uv", 0)])
def test_a_recreate_behind_a_dead_network_passes_and_says_so_once_per_upstream(
    make_project: MakeProject, index: PrivateIndex, runner: str, ttl: int | None
) -> None:
    for name in DOZEN[:-1]:
        index.add(name, "1.0", sdist=False)
    project = make_project("setuptools", runner, tox_ini=OFFLINE_INI)
    # past their TTL (ttl 0): every page asks the upstream; fresh: only names never cached do
    (project.root / "nestegg.yml").write_text("nestegg:\n" + ("" if ttl is None else f"  ttl: {ttl}\n"))
    times = {}

    def timed(phase: str) -> Outcome:
        started = time.monotonic()
        outcome = project.tox("run", "-r")
        times[phase] = time.monotonic() - started
        assert "imported 1.1" in outcome.out, outcome.out
        return outcome

    assert outages(timed("online")) == [(DNS_FAILS, "name not resolved")]
    main = index.index_url
    port = int(main.split(":")[2].split("/")[0])

    index.stop()  # nothing listens on its port: refused
    # fresh pages and cached files: the main upstream is never asked, so never found down
    asked = [(main, "connection refused")] if ttl == 0 else []
    assert outages(timed("refused")) == sorted([*asked, (DNS_FAILS, "name not resolved")])

    # the same URL accepts every connection and never answers
    with RawUpstream(lambda _method, _path: Answer(hang=True), port=port) as hanging:
        hung = timed("hanging")
    expected = [(DNS_FAILS, "name not resolved")]
    if ttl == 0:  # else every page is fresh and the hanging upstream is never asked
        expected.append((main, "timed out"))
    assert outages(hung) == sorted(expected), hung.out
    pages = [path for _, path, _ in hanging.seen if path.startswith("/simple/")]
    assert len(pages) <= 1, (pages, times)  # waited for once in the whole run, not once per page
    print(f"\n{runner} ttl={ttl}: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    # generous (a loaded machine): a dead network costs seconds, not a wait per page
    assert times["refused"] < times["online"] + 60, times
    assert times["hanging"] < times["online"] + 60, times


# provisioning ------------------------------------------------------------------------------

PROVISIONED = textwrap.dedent("""\
    [tox]
    requires = {requires}
    env_list = py

    [testenv]
    skip_install = true
    deps = depdep
    commands = python -c "import depdep; print('ran')"

    # the provision environment's pip sees tox where the test venv has it (see visible_to_provisioned):
    # tox's own install command runs pip with -I, which ignores PYTHONPATH
    [testenv:.tox]
    install_command = python -m pip install {{opts}} {{packages}}
    """)
#: the distributions of this package, as site-packages holds them (installed or editable)
OURS = ("tox_nestegg", "nestegg_core", "__editable__.tox_nestegg", "__editable___tox_nestegg")


def visible_to_provisioned(tmp_path: Path, *, with_plugin: bool) -> str:
    """A PYTHONPATH that shows the provisioned tox this venv's tox; the plugin only ``with_plugin``.

    tox passes every variable to the provision environment: its pip then finds tox (and the plugin)
    already there and installs only what the fake upstream serves, and the provisioned tox imports them.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    if with_plugin:  # the source root too: an editable install's finder is not read from PYTHONPATH
        return os.pathsep.join([str(site), str(Path(nestegg_core.__file__).parents[1])])
    view = tmp_path / "site-without-nestegg"
    view.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(OURS):
            (view / entry.name).symlink_to(entry)
    return str(view)


@pytest.mark.parametrize("with_plugin", [False, True])
def test_a_provisioned_tox_says_it_runs_without_the_mirror_unless_required(
    make_project: MakeProject, index: PrivateIndex, faults: Faults, tmp_path: Path, with_plugin: bool
) -> None:
    index.add("provisioned-only", "1.0", sdist=False)  # what this tox lacks, so that tox provisions
    requires = "provisioned-only\n    tox-nestegg" if with_plugin else "provisioned-only"
    project = make_project(tox_ini=PROVISIONED.format(requires=requires))
    project.env["PYTHONPATH"] = visible_to_provisioned(tmp_path, with_plugin=with_plugin)
    outcome = project.tox("run")
    assert "will run in automatically provisioned tox" in outcome.out, outcome.out
    assert "ran" in outcome.out, outcome.out
    said = [line for line in outcome.out.splitlines() if "tox provisions itself" in line]
    depdep = {
        s.headers.get("user-agent", "").split("/")[0] for s in faults.seen if s.path == "/simple/depdep/"
    }
    if with_plugin:
        assert said == [], outcome.out
        # the provisioned tox runs the mirror (the outer one provisions before any mirror starts)
        assert outcome.out.count("nestegg serving") == 1, outcome.out
        assert depdep == {"nestegg"}
    else:
        assert said == [
            "ROOT: nestegg: [tox] requires provisioned-only, so tox provisions itself and the provisioned "
            "tox runs without the nestegg mirror; adding tox-nestegg to requires gives it"
        ], outcome.out
        assert "nestegg serving" not in outcome.out
        assert depdep == {"pip"}  # the provisioned tox's install went straight to the upstream
