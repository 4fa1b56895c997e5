"""``upstreams`` in nestegg.yml: indexes that alone serve the names their patterns match."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestegg_core.config.config import Upstream, load_config
from nestegg_core.errors import ConfigError
from nestegg_core.simple.patterns import NamePatterns, common_name, normalize_pattern, pattern_problem

GITLAB = "https://gitlab.example.com/api/v4/groups/7/-/packages/pypi/simple"


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "nestegg.yml"
    path.write_text(text)
    return load_config(path)


def test_upstreams_are_read_normalized(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        f"nestegg:\n  upstreams:\n    - url: {GITLAB}\n      projects: ['Acme_*', internal.tools, acme-*]\n",
    )
    assert config.upstreams == (Upstream(url=GITLAB + "/", projects=("acme-*", "internal-tools")),)  # type: ignore[attr-defined]


def test_the_password_of_an_upstream_stays_out_of_the_config_repr(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "nestegg:\n  upstreams:\n    - url: https://me:s3cr3t-pw@example.com/simple\n      projects: [a]\n",
    )
    assert "s3cr3t-pw" not in repr(config)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("{}", "nestegg.upstreams: expected a list, got dict"),
        (
            "[{url: 'ftp://example.com/simple', projects: [a]}]",
            "nestegg.upstreams[0].url: 'ftp://example.com/simple' is not an http(s) URL",
        ),
        (
            "[{url: 'example.com', projects: [a]}]",
            "nestegg.upstreams[0].url: 'example.com' is not an http(s) URL",
        ),
        ("[{projects: [a]}]", "nestegg.upstreams[0].url: is required"),
        ("[{url: 'https://example.com/s'}]", "nestegg.upstreams[0].projects: is required"),
        (
            "[{url: 'https://example.com/s', projects: []}]",
            "nestegg.upstreams[0].projects: expected at least one",
        ),
        ("[{url: 'https://example.com/s', projects: [a], tll: 1}]", "nestegg.upstreams[0].tll: unknown key"),
        (
            "[{url: 'https://example.com/s', projects: ['a b']}]",
            "nestegg.upstreams[0].projects[0]: 'a b' is not a valid project name",
        ),
        (
            "[{url: 'https://example.com/s', projects: ['acme[x']}]",
            "nestegg.upstreams[0].projects[0]: 'acme[x' matches no project name",
        ),
        (
            "[{url: 'https://example.com/s', projects: ['a/*']}]",
            "nestegg.upstreams[0].projects[0]: 'a/*' matches no project name",
        ),
        (
            "[{url: 'https://example.com/a', projects: [x]}, {url: 'https://example.com/a/', projects: [y]}]",
            "nestegg.upstreams[1].url: 'https://example.com/a/' is listed twice",
        ),
        (
            "[{url: 'https://example.com/a', projects: ['acme-*']},"
            " {url: 'https://example.com/b', projects: [b, '*-tools']}]",
            "nestegg.upstreams[1].projects[1]: '*-tools' and nestegg.upstreams[0].projects[0] 'acme-*'"
            " both match 'acme-tools'",
        ),
        (
            "[{url: 'https://example.com/a', projects: [Acme.Tools]},"
            " {url: 'https://example.com/b', projects: [acme_tools]}]",
            "'acme_tools' and nestegg.upstreams[0].projects[0] 'Acme.Tools' both match 'acme-tools'",
        ),
    ],
)
def test_bad_upstreams_are_one_line_naming_file_key_and_value(
    tmp_path: Path, entries: str, message: str
) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(f"nestegg:\n  upstreams: {entries}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("private", "message"),
    [
        (
            "private_names: ['acme-secret*']",
            "'acme-*' matches the private name 'acme-secret' (nestegg.private_names[0] 'acme-secret*')",
        ),
        (
            "source_builds: [{name: Acme_Build, repo_type: git, repo_url: x}]",
            "'acme-*' matches the private name 'acme-build' (nestegg.source_builds[0].name 'acme-build')",
        ),
    ],
)
def test_a_route_that_shadows_a_private_name_is_an_error(tmp_path: Path, private: str, message: str) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(
        f"nestegg:\n  {private}\n  upstreams: [{{url: 'https://example.com/a', projects: ['acme-*']}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}: nestegg.upstreams[0].projects[0]: {message}" in str(info.value)


def test_a_merged_source_build_may_be_routed(tmp_path: Path) -> None:
    # private: no merges its own files with the upstream's; for a routed name that upstream is the route's
    config = _load(
        tmp_path,
        "nestegg:\n  source_builds: [{name: acme-x, repo_type: git, repo_url: x, private: no}]\n"
        "  upstreams: [{url: 'https://example.com/a', projects: ['acme-*']}]\n",
    )
    assert config.upstreams[0].projects == ("acme-*",)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("first", "second", "common"),
    [
        ("acme-*", "*-tools", "acme-tools"),
        ("acme-*", "internal-tools", None),
        ("a*", "b*", None),
        ("acme*", "acme", "acme"),
        ("*", "*", "a"),
        ("a[bc]*", "a[cd]", "ac"),
        ("a?", "a", None),
        ("x[!a-z]", "x[0-9]", "x0"),
    ],
)
def test_common_name_of_two_patterns(first: str, second: str, common: str | None) -> None:
    found = common_name(normalize_pattern(first), normalize_pattern(second))
    assert found == common
    if found is not None:
        both = NamePatterns([first]).matches(found) and NamePatterns([second]).matches(found)
        assert both


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("acme", None),
        ("Acme_Tools", None),
        ("acme-*", None),
        ("*", None),
        ("a b", "is not a valid project name"),
        ("a[b", "matches no project name"),
        ("[!a-z0-9-]", "matches no project name"),
        ("x@*", "matches no project name"),
    ],
)
def test_pattern_problems(pattern: str, problem: str | None) -> None:
    assert pattern_problem(pattern) == problem
