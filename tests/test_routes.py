"""Routes: a project an ``upstreams`` entry names comes from that index alone.

Two fake upstreams: the default one carries a higher version under the routed name (the
dependency-confusion attack), the internal one the real project.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Config, Mirror
from nestegg_core.cli import main
from nestegg_core.config.config import Upstream
from nestegg_core.serve.mounts import UpstreamMounts
from nestegg_core.simple import clients
from nestegg_core.testing import installer_env, make_venv
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults
from .loopback import install_command, refused_url, wait_until


@pytest.fixture
def internal_faults() -> Faults:
    return Faults()


@pytest.fixture
def internal(tmp_path: Path, internal_faults: Faults) -> Iterator[PrivateIndex]:
    """The second fake index: the company's own, that alone has the real ``acme-*`` projects."""
    index = PrivateIndex(tmp_path / "internal", middleware=internal_faults).start()
    try:
        yield index
    finally:
        index.stop()


@pytest.fixture
def confused(upstream: PrivateIndex, internal: PrivateIndex) -> None:
    upstream.add("acme-tools", "99.0")  # published by someone else on the public index
    upstream.add("public-lib", "2.0")
    internal.add("acme-tools", "1.0", requires_dist=["public-lib"])
    internal.add("public-lib", "0.1")  # the internal index is never asked for public names


@pytest.fixture
def routed(tmp_path: Path, upstream: PrivateIndex, internal: PrivateIndex) -> Iterator[Mirror]:
    config = Config(
        nestegg_dir=tmp_path / "nest",
        port=0,
        index_url=upstream.index_url,
        upstreams=(Upstream(url=internal.index_url, projects=("acme-*",)),),
    )
    with Mirror(config) as mirror:
        yield mirror


def asked(faults: Faults, name: str) -> list[str]:
    """The paths of the requests of an index's log that concern ``name``."""
    return [s.path for s in faults.seen if name in s.path or name.replace("-", "_") in s.path]


def versions(page: requests.Response) -> set[str]:
    return {f["filename"].removesuffix(".tar.gz").split("-")[1] for f in page.json()["files"]}


JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.mark.usefixtures("confused")
def test_a_routed_name_comes_from_its_index_only_and_others_from_the_default(
    routed: Mirror, faults: Faults, internal_faults: Faults
) -> None:
    page = requests.get(f"{routed.index_url}acme-tools/", headers=JSON, timeout=10)
    assert page.status_code == 200
    assert versions(page) == {"1.0"}  # never merged with the default's 99.0
    assert asked(faults, "acme-tools") == []  # the default upstream was never asked
    other = requests.get(f"{routed.index_url}public-lib/", headers=JSON, timeout=10)
    assert versions(other) == {"2.0"}
    assert asked(internal_faults, "public-lib") == []
    # the file link routes back to the internal index's cache
    url = requests.compat.urljoin(page.url, page.json()["files"][0]["url"])
    assert requests.get(url, timeout=10).status_code == 200
    assert asked(internal_faults, "/files/acme-tools/") != []
    assert asked(faults, "acme-tools") == []
    # the root index lists the names of both
    root = requests.get(routed.index_url, headers=JSON, timeout=10).json()
    assert {"acme-tools", "public-lib"} <= {p["name"] for p in root["projects"]}


@pytest.mark.usefixtures("confused")
def test_a_routed_index_down_fails_naming_it_and_never_falls_through(
    routed: Mirror, faults: Faults, internal: PrivateIndex, internal_faults: Faults
) -> None:
    internal_faults.status = 503
    page = requests.get(f"{routed.index_url}acme-tools/", timeout=10)
    assert page.status_code == 502
    assert internal.url.removeprefix("http://") in page.reason + page.text
    assert asked(faults, "acme-tools") == []


@pytest.mark.usefixtures("confused")
def test_a_routed_index_that_cannot_be_reached_is_a_410_naming_it(
    tmp_path: Path, upstream: PrivateIndex, faults: Faults
) -> None:
    unreachable = refused_url()
    config = Config(
        nestegg_dir=tmp_path / "nest",
        port=0,
        index_url=upstream.index_url,
        upstreams=(Upstream(url=unreachable, projects=("acme-*",)),),
    )
    with Mirror(config) as mirror:
        page = requests.get(f"{mirror.index_url}acme-tools/", timeout=10)
    assert page.status_code == 410  # nothing cached, as for the default index: installers go on at once
    assert unreachable.removeprefix("http://") in page.reason + page.text
    assert asked(faults, "acme-tools") == []


@pytest.mark.usefixtures("confused")
def test_a_routed_index_down_serves_its_stale_page(
    tmp_path: Path, upstream: PrivateIndex, internal: PrivateIndex, faults: Faults, internal_faults: Faults
) -> None:
    config = Config(
        nestegg_dir=tmp_path / "nest",
        port=0,
        ttl=0,
        index_url=upstream.index_url,
        upstreams=(Upstream(url=internal.index_url, projects=("acme-*",)),),
    )
    with Mirror(config) as mirror:
        page = requests.get(f"{mirror.index_url}acme-tools/", headers=JSON, timeout=10)
        assert versions(page) == {"1.0"}
        url = requests.compat.urljoin(page.url, page.json()["files"][0]["url"])
        assert requests.get(url, timeout=10).status_code == 200
        internal_faults.status = 503
        stale = requests.get(f"{mirror.index_url}acme-tools/", headers=JSON, timeout=10)
        assert stale.status_code == 200
        assert [f["url"] for f in stale.json()["files"]] == [page.json()["files"][0]["url"]]  # cached
    assert asked(faults, "acme-tools") == []


@pytest.mark.usefixtures("confused")
def test_a_routed_name_is_cached_apart_and_served_offline(
    tmp_path: Path, routed: Mirror, upstream: PrivateIndex, internal: PrivateIndex, faults: Faults
) -> None:
    page = requests.get(f"{routed.index_url}acme-tools/", headers=JSON, timeout=10)
    url = requests.compat.urljoin(page.url, page.json()["files"][0]["url"])
    assert requests.get(url, timeout=10).status_code == 200
    offline = routed.config.with_changes(offline=True)
    with Mirror(offline) as mirror:
        again = requests.get(f"{mirror.index_url}acme-tools/", headers=JSON, timeout=10)
        assert versions(again) == {"1.0"}
        assert requests.get(url.replace(routed.url, mirror.url), timeout=10).status_code == 200
    assert requests.get(f"{routed.index_url}public-lib/", timeout=10).status_code == 200
    # the internal index's cache has a namespace of its own
    folders = {p.name for p in (tmp_path / "nest" / "mirror").iterdir()}
    assert len([f for f in folders if f.startswith("127.0.0.1")]) == 2
    assert asked(faults, "acme-tools") == []


@pytest.mark.usefixtures("confused")
def test_a_mounted_extra_index_serves_a_routed_name_from_its_route(
    tmp_path: Path, routed: Mirror, faults: Faults
) -> None:
    extra_faults = Faults()
    extra = PrivateIndex(tmp_path / "extra", middleware=extra_faults).start()
    try:
        extra.add("acme-tools", "50.0")
        extra.add("extra-only", "1.0")
        mounted = UpstreamMounts(routed).index_url(extra.index_url)
        page = requests.get(f"{mounted}acme-tools/", headers=JSON, timeout=10)
        assert versions(page) == {"1.0"}
        url = requests.compat.urljoin(page.url, page.json()["files"][0]["url"])
        assert requests.get(url, timeout=10).status_code == 200
        assert asked(extra_faults, "acme-tools") == []
        assert versions(requests.get(f"{mounted}extra-only/", headers=JSON, timeout=10)) == {"1.0"}
    finally:
        extra.stop()
    assert asked(faults, "acme-tools") == []


def installed(python: Path) -> dict[str, str]:
    script = (
        "import importlib.metadata as m; "
        "print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))"
    )
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(line.lower().replace("_", "-").split("==") for line in out.split())


@pytest.mark.slow
@pytest.mark.usefixtures("confused")
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_pip_and_uv_install_the_routed_project_from_its_index_only(
    tmp_path: Path, routed: Mirror, faults: Faults, internal_faults: Faults, installer: str
) -> None:
    python = make_venv(tmp_path / "venv")
    command = install_command(installer, python, "acme-tools")
    result = subprocess.run(
        command, env=installer_env(routed.index_url), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = installed(python)
    assert got["acme-tools"] == "1.0"
    assert got["public-lib"] == "2.0"  # its dependency, from the default index
    assert asked(faults, "acme-tools") == []
    assert asked(internal_faults, "public-lib") == []


@pytest.mark.usefixtures("confused")
def test_the_web_ui_list_and_export_know_each_projects_index(
    tmp_path: Path,
    routed: Mirror,
    upstream: PrivateIndex,
    internal: PrivateIndex,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("acme-tools", "public-lib"):
        page = requests.get(f"{routed.index_url}{name}/", headers=JSON, timeout=10)
        for dist in page.json()["files"]:
            assert requests.get(requests.compat.urljoin(page.url, dist["url"]), timeout=10).status_code == 200
    listing = requests.get(f"{routed.url}/ui/?format=json", timeout=10).json()
    index = {p["name"]: p["index"] for p in listing["projects"]}
    assert index == {"acme-tools": internal.index_url, "public-lib": upstream.index_url}
    assert requests.get(f"{routed.url}/ui/project/acme-tools?format=json", timeout=10).json()["index"] == (
        internal.index_url
    )
    html = requests.get(f"{routed.url}/ui/project/acme-tools", timeout=10).text
    assert internal.index_url in html
    assert internal.index_url in requests.get(f"{routed.url}/ui/", timeout=10).text

    nestegg = tmp_path / "nestegg.yml"
    nestegg.write_text(
        f"nestegg:\n  nestegg_dir: {tmp_path / 'nest'}\n  index_url: {upstream.index_url}\n"
        f"  upstreams: [{{url: '{internal.index_url}', projects: ['acme-*']}}]\n"
    )
    assert main(["--config", str(nestegg), "list"]) == 0
    assert f"acme-*  from {internal.index_url}" in capsys.readouterr().out
    assert main(["--config", str(nestegg), "list", "acme-tools"]) != 0
    assert f"it comes from {internal.index_url}" in capsys.readouterr().err
    assert main(["--config", str(nestegg), "export", str(tmp_path / "out")]) == 0
    exported = {p.name for p in (tmp_path / "out" / "files").iterdir()}
    assert {"acme_tools-1.0-py3-none-any.whl", "acme_tools-1.0.tar.gz"} <= exported
    assert not any("99.0" in name for name in exported)


def test_a_routed_wheel_is_downloaded_ahead_from_its_index_only(
    routed: Mirror,
    faults: Faults,
    internal_faults: Faults,
    upstream: PrivateIndex,
    internal: PrivateIndex,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pip's read of a routed wheel's metadata starts the wheel's download (``fetch_ahead``), by
    the route's own repository: from the internal index, never the default one."""
    monkeypatch.setattr(clients, "PIP_METADATA_MIN_SIZE", 1)
    upstream.add("acme-big", "1.0", sdist=False, payload_size=100_000)  # someone else's
    [wheel] = internal.add("acme-big", "1.0", sdist=False, payload_size=200_000)
    pip = {**JSON, "User-Agent": "pip/26.3"}
    assert requests.get(f"{routed.index_url}acme-big/", headers=pip, timeout=10).ok
    metadata = f"{routed.url}/files/acme-big/{wheel.filename}.metadata"
    assert requests.get(metadata, headers=pip, timeout=10).ok
    route = routed.repository.routes.serving("acme-big")
    assert route is not None
    cached = route.store.file_path(NormalizedName("acme-big"), wheel.filename)
    wait_until(cached.is_file, "the routed wheel cached without a request for it")
    assert route.downloads.ahead_count == 1
    assert [seen.path for seen in internal_faults.files()] == [f"/files/acme-big/{wheel.filename}"]
    assert asked(faults, "acme-big") == []
