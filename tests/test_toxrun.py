"""The tox plugin's logic without tox: commands, settings, ports, variables, and a run's mirror."""

from __future__ import annotations

import importlib.metadata
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement

from nestegg_core.config.config import Config
from nestegg_core.errors import ConfigError, NesteggError
from nestegg_core.serve.mounts import PREFIX, upstream_key
from nestegg_core.storage.store import upstream_key as store_key
from nestegg_core.testing.pytest_plugin import PrivateIndex
from nestegg_core.toxrun.run import (
    PORT_FILE,
    STABLE_PORTS,
    Found,
    ToxRun,
    found_settings,
    install_variables,
    load_tox_config,
    port_candidates,
    read_port,
)
from nestegg_core.toxrun.settings import (
    Settings,
    command_installs,
    installed_version,
    provision_warning,
    resolve_settings,
    unmet_requires,
)

from .conftest import Faults

MAIN = "http://127.0.0.1:2/simple/"


def fake_route(url: str | None) -> str:
    """The mirror's URL for an index, as the tests expect it: main, or mounted by name."""
    return MAIN if url is None else f"http://127.0.0.1:2/{PREFIX}/{url.split('//')[1].split('/')[0]}/simple/"


# commands ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "only_lists", "installs"),
    [
        ("legacy", False, True),  # plain `tox`, `tox -e x`, `tox -p`
        ("le", False, True),
        ("legacy", True, False),  # `tox -l`, `tox -a`, `tox --showconfig`
        ("run", False, True),
        ("r", False, True),
        ("run-parallel", False, True),
        ("p", False, True),
        ("exec", False, True),
        ("e", False, True),
        ("devenv", False, True),
        ("d", False, True),
        ("list", False, False),
        ("l", False, False),
        ("config", False, False),
        ("c", False, False),
        ("depends", False, False),
        ("de", False, False),
        ("quickstart", False, False),
        ("schema", False, False),
    ],
)
def test_which_commands_start_the_mirror(command: str, only_lists: bool, installs: bool) -> None:
    assert command_installs(command, only_lists=only_lists) is installs


# settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "keys", "expected"),
    [
        ({}, {}, Settings()),
        ({"no_nestegg": True}, {}, Settings(enabled=False)),
        ({}, {"enabled": False}, Settings(enabled=False)),
        ({"offline_option": True}, {}, Settings(offline=True)),
        ({}, {"offline_key": True}, Settings(offline=True)),
        ({"refresh_option": True}, {"refresh_key": False}, Settings(refresh=True)),
        ({}, {"config_key": "ci/nestegg.yml"}, Settings(config_file=Path("/root/ci/nestegg.yml"))),
        (
            {"config_option": Path("/etc/n.yml")},
            {"config_key": "ci/nestegg.yml"},
            Settings(config_file=Path("/etc/n.yml")),
        ),
        ({}, {"config_key": "  "}, Settings()),
    ],
)
def test_command_line_wins_over_tox_config(options: dict[str, object], keys: dict[str, object],
                                          expected: Settings) -> None:  # fmt: skip
    assert resolve_settings(**options, **keys, root=Path("/root")) == expected  # type: ignore[arg-type]


def test_tox_config_of_a_missing_file_names_it(tmp_path: Path) -> None:
    settings = resolve_settings(config_key="nope.yml", root=tmp_path)
    with pytest.raises(ConfigError, match=r"nope\.yml"):
        load_tox_config(settings, environ={})


def test_the_mirror_of_a_tox_run_is_on_loopback_whatever_the_config(tmp_path: Path) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(f"nestegg:\n  host: 0.0.0.0\n  nestegg_dir: {tmp_path / 'nest'}\n")
    config = load_tox_config(Settings(config_file=path, offline=True), environ={})
    assert (config.host, config.offline, config.nestegg_dir) == ("127.0.0.1", True, tmp_path / "nest")


@pytest.mark.parametrize(
    ("named", "environ", "port"),
    [
        (False, {}, 1),  # beside tox.ini, wherever tox starts
        (True, {}, 2),  # nestegg_config / --nestegg-config
        (False, {"NESTEGG_CONFIG": "env.yml"}, 3),
    ],
)
def test_the_nestegg_yml_of_a_tox_run_is_the_one_in_its_root_unless_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool, environ: dict[str, str], port: int
) -> None:
    root, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "nestegg.yml").write_text("nestegg: {port: 4}\n")
    (root / "nestegg.yml").write_text("nestegg: {port: 1}\n")
    (root / "ci.yml").write_text("nestegg: {port: 2}\n")
    (tmp_path / "env.yml").write_text("nestegg: {port: 3}\n")
    settings = resolve_settings(config_key="ci.yml" if named else "", root=root)
    environ = {key: str(tmp_path / value) for key, value in environ.items()}
    assert load_tox_config(settings, environ=environ, root=root).port == port


# ports -------------------------------------------------------------------------------------


def test_ports_are_derived_from_the_work_dir_and_end_with_any_port(tmp_path: Path) -> None:
    first = port_candidates(tmp_path / "a" / ".tox")
    assert first == port_candidates(tmp_path / "a" / ".tox")  # stable across runs
    assert first != port_candidates(tmp_path / "b" / ".tox")  # projects do not share one
    assert first[-1] == 0
    assert all(port in STABLE_PORTS for port in first[:-1])
    assert len(set(first)) == len(first)


def test_the_kept_port_is_tried_first(tmp_path: Path) -> None:
    derived = port_candidates(tmp_path)
    assert port_candidates(tmp_path, 40123) == [40123, *derived]
    assert port_candidates(tmp_path, derived[1]) == [derived[1], derived[0], *derived[2:]]


@pytest.mark.parametrize(
    ("text", "port"),
    [("23456\n", 23456), ("1", 1), ("0", None), ("65536", None), ("-5", None), ("x", None), ("", None)],
)
def test_read_port(tmp_path: Path, text: str, port: int | None) -> None:
    path = tmp_path / PORT_FILE
    path.write_text(text)
    assert read_port(path) == port


def test_read_port_of_a_missing_file(tmp_path: Path) -> None:
    assert read_port(tmp_path / PORT_FILE) is None


# provisioning ------------------------------------------------------------------------------

#: what the interpreter of these tables has installed (canonical names)
INSTALLED = {"tox": "4.30.0", "tox-uv": "1.30.0rc1", "tox-nestegg": "0.1.0"}.get


@pytest.mark.parametrize(
    ("requires", "unmet"),
    [
        (["tox"], []),
        (["tox>=4.20", "tox-uv>=1"], []),
        (["tox>=5"], ["tox>=5"]),  # provisions a newer tox
        (["covdefaults"], ["covdefaults"]),  # not installed at all
        (["Tox_UV>=1.30.0rc0"], []),  # names as packaging compares them
        (["tox-uv>=1.29"], []),  # a pre-release meets a specifier, as tox judges
        (["tox-uv>=1.30"], ["tox-uv>=1.30"]),
        (['covdefaults; python_version < "3"'], []),  # a marker that does not hold drops it
        (['covdefaults; python_version >= "3"'], ['covdefaults; python_version >= "3"']),
        (["tox @ https://example.invalid/tox-4.0-py3-none-any.whl"], []),  # installed: origin unjudged
        (["tox-extra @ https://example.invalid/tox_extra-1-py3-none-any.whl"],
         ["tox-extra@ https://example.invalid/tox_extra-1-py3-none-any.whl"]),
    ],
)  # fmt: skip
def test_unmet_requires_are_what_tox_provisions_for(requires: list[str], unmet: list[str]) -> None:
    assert [str(r) for r in unmet_requires(map(Requirement, requires), INSTALLED)] == [
        str(Requirement(r)) for r in unmet
    ]


@pytest.mark.parametrize(
    ("requires", "no_provision", "warned"),
    [
        (["tox"], False, False),  # no provisioning
        (["tox>=5"], False, True),  # a provisioned tox without the plugin
        (["tox>=5", "tox-nestegg"], False, False),  # the provisioned tox has the plugin
        (["tox>=5", "Tox_Nestegg>=0.2"], False, False),  # unmet itself: provisioned with it
        (["tox>=5"], True, False),  # --no-provision: tox fails instead
        (["tox>=5"], "provision.json", False),  # --no-provision writing the requirements
    ],
)
def test_a_provisioning_without_the_plugin_is_said(
    requires: list[str], no_provision: bool | str, warned: bool
) -> None:
    line = provision_warning(map(Requirement, requires), INSTALLED, no_provision=no_provision)
    if not warned:
        assert line is None
        return
    assert line == (
        "nestegg: [tox] requires tox>=5, so tox provisions itself and the provisioned tox runs "
        "without the nestegg mirror; adding tox-nestegg to requires gives it"
    )


def test_installed_version_reads_this_interpreters_distributions() -> None:
    assert installed_version("packaging") == importlib.metadata.version("packaging")
    assert installed_version("not-installed-anywhere") is None


# variables ---------------------------------------------------------------------------------

BLANK = {
    "PIP_INDEX_URL": MAIN,
    "PIP_EXTRA_INDEX_URL": "",
    "UV_DEFAULT_INDEX": MAIN,
    "UV_INDEX_URL": MAIN,
    "UV_INDEX": "",
    "UV_EXTRA_INDEX_URL": "",
}


def variables(explicit: bool = False, **found: tuple[str, str]) -> dict[str, str]:
    values = {name: Found(value, origin) for name, (value, origin) in found.items()}
    return install_variables(values, fake_route, explicit_upstream=explicit).variables


@pytest.mark.parametrize(
    ("found", "explicit", "changed"),
    [
        # nothing configured: everything to the mirror, extra indexes blanked
        ({}, False, {}),
        # the project's own index becomes an upstream of the mirror, for pip and uv alike
        ({"PIP_INDEX_URL": ("https://corp.example/simple", "set_env")}, False,
         {"PIP_INDEX_URL": fake_route("https://corp.example/simple")}),
        ({"PIP_INDEX_URL": ("https://corp.example/simple", "set_env")}, True,
         {"PIP_INDEX_URL": fake_route("https://corp.example/simple")}),
        # ...but an index from outside the project gives way to nestegg.yml's index_url
        ({"PIP_INDEX_URL": ("https://corp.example/simple", "environment")}, True, {}),
        ({"PIP_INDEX_URL": ("https://corp.example/simple", "pip config")}, False,
         {"PIP_INDEX_URL": fake_route("https://corp.example/simple")}),
        # an empty variable is no setting (pip and uv read it as unset)
        ({"PIP_INDEX_URL": ("", "set_env")}, False, {}),
        # uv: UV_DEFAULT_INDEX wins over UV_INDEX_URL, as in uv
        ({"UV_INDEX_URL": ("https://a.example/simple", "set_env"),
          "UV_DEFAULT_INDEX": ("https://b.example/simple", "environment")}, False,
         {"UV_DEFAULT_INDEX": fake_route("https://b.example/"), "UV_INDEX_URL": fake_route("https://b.example/")}),
        ({"UV_INDEX_URL": ("https://a.example/simple", "set_env")}, False,
         {"UV_DEFAULT_INDEX": fake_route("https://a.example/"), "UV_INDEX_URL": fake_route("https://a.example/")}),
        # extra indexes are mirrored too, each entry, names of uv indexes kept
        ({"PIP_EXTRA_INDEX_URL": ("https://a.example/s https://b.example/s", "environment")}, True,
         {"PIP_EXTRA_INDEX_URL": f"{fake_route('https://a.example/')} {fake_route('https://b.example/')}"}),
        ({"UV_INDEX": ("corp=https://a.example/s /srv/local-index", "set_env")}, False,
         {"UV_INDEX": f"corp={fake_route('https://a.example/')} /srv/local-index"}),
        ({"UV_EXTRA_INDEX_URL": ("https://a.example/s", "environment")}, False,
         {"UV_EXTRA_INDEX_URL": fake_route("https://a.example/")}),
        # a local index is no network access: left as it is
        ({"PIP_INDEX_URL": ("file:///srv/index", "set_env")}, False, {"PIP_INDEX_URL": "file:///srv/index"}),
        # local find-links stay (nothing exported); remote ones are dropped
        ({"PIP_FIND_LINKS": ("/opt/wheels", "environment")}, False, {}),
        ({"PIP_FIND_LINKS": ("/opt/wheels https://a.example/links/", "environment")}, False,
         {"PIP_FIND_LINKS": "/opt/wheels"}),
        ({"UV_FIND_LINKS": ("https://a.example/links/,./wheels", "set_env")}, False,
         {"UV_FIND_LINKS": "./wheels"}),
        ({"UV_FIND_LINKS": ("./wheels", "set_env")}, False, {}),
    ],
)  # fmt: skip
def test_install_variables(
    found: dict[str, tuple[str, str]], explicit: bool, changed: dict[str, str]
) -> None:
    assert variables(explicit, **found) == {**BLANK, **changed}


def test_dropped_find_links_are_warned_about() -> None:
    found = {"PIP_FIND_LINKS": Found("https://u:secret@a.example/links/ /w", "environment")}
    injection = install_variables(found, fake_route)
    (warning,) = injection.warnings
    assert "https://u:***@a.example/links/" in warning
    assert "PIP_FIND_LINKS (environment)" in warning
    assert "secret" not in warning


@pytest.mark.parametrize(
    ("set_env", "environ", "pip_config", "passes", "expected"),
    [
        ({"PIP_INDEX_URL": "a"}, {"PIP_INDEX_URL": "b"}, {"PIP_INDEX_URL": "c"}, True,
         {"PIP_INDEX_URL": Found("a", "set_env")}),
        ({}, {"PIP_INDEX_URL": "b"}, {"PIP_INDEX_URL": "c"}, True,
         {"PIP_INDEX_URL": Found("b", "environment")}),
        # not passed on by tox: pip in the environment reads its config files instead
        ({}, {"PIP_INDEX_URL": "b"}, {"PIP_INDEX_URL": "c"}, False,
         {"PIP_INDEX_URL": Found("c", "pip config")}),
        ({}, {"UV_INDEX": "u", "HOME": "/h"}, {}, True, {"UV_INDEX": Found("u", "environment")}),
        ({}, {"UV_INDEX": "u"}, {}, False, {}),
    ],
)  # fmt: skip
def test_found_settings(set_env: dict[str, str], environ: dict[str, str], pip_config: dict[str, str],
                        passes: bool, expected: dict[str, Found]) -> None:  # fmt: skip
    assert found_settings(set_env, lambda _: passes, environ, pip_config) == expected


# a run's mirror ----------------------------------------------------------------------------


@pytest.fixture
def start_run(tmp_path: Path, upstream: PrivateIndex) -> Iterator[Callable[..., ToxRun]]:
    runs: list[ToxRun] = []

    def start(**changes: object) -> ToxRun:
        config = Config(nestegg_dir=tmp_path / "nest", index_url=upstream.index_url).with_changes(**changes)
        run = ToxRun(config, work_dir=tmp_path / ".tox", environ={}).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()


def test_a_run_keeps_its_port_for_the_next(start_run: Callable[..., ToxRun], tmp_path: Path) -> None:
    run = start_run()
    port = run.mirror.port
    assert read_port(tmp_path / ".tox" / PORT_FILE) == port
    assert f"127.0.0.1:{port}" in run.describe()
    assert str(tmp_path / "nest") in run.describe()
    run.stop()
    again = start_run()
    assert again.mirror.port == port


def test_a_busy_port_falls_back_and_is_kept(start_run: Callable[..., ToxRun], tmp_path: Path) -> None:
    first = start_run()  # a second tox of the same project, still running
    second = start_run()
    assert second.mirror.port != first.mirror.port
    assert read_port(tmp_path / ".tox" / PORT_FILE) == second.mirror.port


def test_a_port_held_by_another_program_is_skipped(start_run: Callable[..., ToxRun], tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        (tmp_path / ".tox").mkdir()
        (tmp_path / ".tox" / PORT_FILE).write_text(str(other.getsockname()[1]))
        run = start_run()
        assert run.mirror.port == port_candidates(tmp_path / ".tox")[0]


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("host", r"cannot listen on 192\.0\.2\.1"),
        ("cache", r"cannot use '.*a-file/nest' as the nestegg dir"),
    ],
)
def test_a_mirror_that_cannot_start_says_why(
    tmp_path: Path, upstream: PrivateIndex, problem: str, message: str
) -> None:
    (tmp_path / "a-file").write_text("")
    config = Config(nestegg_dir=tmp_path / "nest", index_url=upstream.index_url)
    if problem == "host":  # TEST-NET-1 (192.0.2.0/24) is never an address of this machine
        config = config.with_changes(host="192.0.2.1")
    else:
        config = config.with_changes(nestegg_dir=tmp_path / "a-file" / "nest")
    run = ToxRun(config, work_dir=tmp_path / ".tox", environ={})
    with pytest.raises(NesteggError, match="cannot start the mirror: " + message):
        run.start()
    assert not (tmp_path / ".tox" / PORT_FILE).exists()


def test_the_users_index_is_mirrored_under_its_own_route(
    start_run: Callable[..., ToxRun], upstream: PrivateIndex, faults: Faults, tmp_path: Path,
    http: requests.Session,
) -> None:  # fmt: skip
    upstream.add("shared", "1.0", sdist=False)
    other = PrivateIndex(tmp_path / "other").start()
    try:
        other.add("elsewhere", "2.0", sdist=False)
        run = start_run()
        values = run.variables({"PIP_INDEX_URL": other.index_url, "UV_INDEX": f"corp={upstream.index_url}"})
        mounted = values["PIP_INDEX_URL"]
        assert mounted == f"{run.mirror.url}/{PREFIX}/{upstream_key(other.index_url)}/simple/"
        # the mirror's own upstream keeps its main route
        assert values["UV_INDEX"] == f"corp={run.mirror.index_url}"
        assert values["UV_DEFAULT_INDEX"] == run.mirror.index_url
        # the same index always gets the same URL
        assert run.variables({"PIP_INDEX_URL": other.index_url + "/"})["PIP_INDEX_URL"] == mounted

        page = http.get(mounted + "elsewhere/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert page.status_code == 200
        (file,) = page.json()["files"]
        wheel = http.get(requests.compat.urljoin(mounted + "elsewhere/", file["url"]))
        assert wheel.status_code == 200
        published = other.root / "nest" / "private" / "elsewhere" / file["filename"]
        assert wheel.content == published.read_bytes()
        assert http.get(mounted + "shared/").status_code == 404  # not on that index
        redirect = http.get(mounted + "Elsewhere/", allow_redirects=False)
        assert redirect.headers["Location"] == f"/{PREFIX}/{upstream_key(other.index_url)}/simple/elsewhere/"
        assert http.get(f"{run.mirror.url}/{PREFIX}/nosuchkey/simple/").status_code == 404
        # each upstream has its own cache
        assert (tmp_path / "nest" / "mirror" / store_key(other.index_url) / "files" / "elsewhere").is_dir()
        assert faults.count(prefix="/simple/elsewhere") == 0  # never asked the main upstream
    finally:
        other.stop()


def test_private_projects_are_private_on_every_route(
    start_run: Callable[..., ToxRun], tmp_path: Path, http: requests.Session
) -> None:
    other = PrivateIndex(tmp_path / "other").start()
    try:
        other.add("secret-lib", "9.0", sdist=False)
        run = start_run(private_names=("secret-*",))
        mounted = run.variables({"PIP_INDEX_URL": other.index_url})["PIP_INDEX_URL"]
        # the name is private: the other index is never asked for it
        assert http.get(mounted + "secret-lib/").status_code == 404
    finally:
        other.stop()


def test_refresh_revalidates_pages_kept_from_an_earlier_run(
    start_run: Callable[..., ToxRun], upstream: PrivateIndex, faults: Faults, http: requests.Session
) -> None:
    upstream.add("dep", "1.0", sdist=False)
    run = start_run()
    assert http.get(run.mirror.index_url + "dep/").status_code == 200
    run.stop()
    faults.reset()
    quiet = start_run()
    assert http.get(quiet.mirror.index_url + "dep/").status_code == 200
    assert faults.count("/simple/dep/") == 0  # fresh within the ttl
    quiet.stop()
    loud = ToxRun(quiet.config, work_dir=quiet.work_dir, refresh=True, environ={}).start()
    try:
        assert http.get(loud.mirror.index_url + "dep/").status_code == 200
        assert faults.count("/simple/dep/") == 1
    finally:
        loud.stop()


def test_offline_runs_never_ask_the_upstream(
    start_run: Callable[..., ToxRun], upstream: PrivateIndex, faults: Faults, http: requests.Session
) -> None:
    upstream.add("dep", "1.0", sdist=False)
    run = start_run(offline=True)
    assert "offline" in run.describe()
    assert (
        http.get(run.mirror.index_url + "dep/").status_code == 410
    )  # NotCached: the cache has nothing, offline
    assert faults.seen == []


def test_the_end_of_a_run_says_once_which_upstreams_it_could_not_reach(
    start_run: Callable[..., ToxRun],
    upstream: PrivateIndex,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (wheel,) = upstream.add("dep", "1.0", sdist=False)
    run = start_run(ttl=0)  # every page past its TTL: each request asks the upstream
    assert http.get(run.mirror.index_url + "dep/").status_code == 200
    assert http.get(f"{run.mirror.url}/files/dep/{wheel.filename}").status_code == 200
    mounted = run.variables({"PIP_EXTRA_INDEX_URL": "http://nestegg-test.invalid/simple/"})[
        "PIP_EXTRA_INDEX_URL"
    ]
    main = upstream.index_url
    upstream.stop()  # its port is closed: refused
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert http.get(run.mirror.index_url + "dep/").status_code == 200  # served stale
    assert http.get(run.mirror.index_url + "never-cached/").status_code == 410
    for name in ("dep", "other"):
        assert http.get(mounted + f"{name}/").status_code == 404
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []  # nothing said yet...
    run.stop()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [  # ...then one line per upstream, at the end
        f"nestegg: upstream {main} unreachable (connection refused): 3 cached pages served stale, "
        "1 names missing (never-cached)",
        "nestegg: upstream http://nestegg-test.invalid/simple/ unreachable (name not resolved): "
        "0 cached pages served stale, 2 names missing (dep, other)",
    ]
