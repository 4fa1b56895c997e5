from __future__ import annotations

import json
import os
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from nestegg_core.config.config import CISettings, Config, environ_settings, load_config
from nestegg_core.config.pipindex import pip_index_url
from nestegg_core.config.refs import ref_problem
from nestegg_core.config.settings import declared, keys, settings_rst
from nestegg_core.errors import ConfigError

SEED = """\
nestegg:
  nestegg_dir: {nest}                                     # Where nestegg makes a nest
  port: 7654                                              # Port to run on
  index-url: https://example.com/simple                   # Pypi Index URL
  source_builds:                                          # List of source builds
    - name: my_package_name                               # package name
      repo_type: git                                      # git and hg supported
      repo_url: git@mygithost.com:myuserid/mypackage.git  # git url here
      private: Yes                                        # private or public
      versions:
        - version: 1.0.0                                  # python version
          tag: 1.0.0                                      # git/hg branch/tag name
          dist_file: mypackage-1.0.0.tar.gz               # source dist file name
"""


def test_seed_config_is_read(tmp_path: Path) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(SEED.format(nest=tmp_path / "nest"))
    config = load_config(path)
    assert config.nestegg_dir == tmp_path / "nest"
    assert config.port == 7654
    assert config.upstream_url == "https://example.com/simple/"
    (build,) = config.source_builds
    assert build.name == "my-package-name"
    assert build.repo_type == "git"
    assert build.private is True
    (version,) = build.versions
    assert (version.version, version.tag, version.dist_file) == ("1.0.0", "1.0.0", "mypackage-1.0.0.tar.gz")


def test_no_config_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NESTEGG_CONFIG", raising=False)
    config = load_config()
    assert config.source is None
    assert (config.host, config.port, config.ttl) == ("127.0.0.1", 7654, 600.0)
    assert config.nestegg_dir.name == "nestegg"


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("NESTEGG_CONFIG", raising=False)
    (home / "nestegg.yml").write_text("nestegg: {port: 1}\n")
    assert load_config().port == 1
    (cwd / "nestegg.yml").write_text("nestegg: {port: 2}\n")
    assert load_config().port == 2
    (tmp_path / "env.yml").write_text("nestegg: {port: 3}\n")
    monkeypatch.setenv("NESTEGG_CONFIG", str(tmp_path / "env.yml"))
    assert load_config().port == 3
    (tmp_path / "arg.yml").write_text("nestegg: {port: 4}\n")
    assert load_config(tmp_path / "arg.yml").port == 4
    assert load_config(tmp_path / "arg.yml", port=5).port == 5


def test_the_project_directory_comes_after_nestegg_config_and_before_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, cwd = tmp_path / "project", tmp_path / "project" / "sub"
    cwd.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("NESTEGG_CONFIG", raising=False)
    (cwd / "nestegg.yml").write_text("nestegg: {port: 1}\n")
    assert load_config(project=project).port == 1
    (project / "nestegg.yml").write_text("nestegg: {port: 2}\n")
    assert load_config(project=project).port == 2
    assert load_config().port == 1  # only a project named is looked in
    (tmp_path / "env.yml").write_text("nestegg: {port: 3}\n")
    monkeypatch.setenv("NESTEGG_CONFIG", str(tmp_path / "env.yml"))
    assert load_config(project=project).port == 3


ONE_RUN = {"host": "127.0.0.1", "public_url": None, "sendfile": None, "ci_token": None}


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("", {}),
        ("host: 0.0.0.0", {}),
        ("public_url: https://nestegg.example.com/", {}),
        ("sendfile: x-accel-redirect\n  sendfile_prefix: /protected/", {"sendfile_prefix": "/protected/"}),
        ("sendfile: x-sendfile", {}),
        ("ci_token: 0123456789abcdef0123", {}),
        (
            "ttl: 30\n  threads: 4\n  compatible_only: yes",
            {"ttl": 30.0, "threads": 4, "compatible_only": True},
        ),
    ],
)
def test_a_mirror_for_one_run_is_on_loopback_sends_its_files_and_runs_no_ci(
    tmp_path: Path, text: str, kept: dict[str, object]
) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(f"nestegg:\n  nestegg_dir: {tmp_path}\n  {text}\n")
    config = load_config(path).for_one_run()
    assert {key: getattr(config, key) for key in ONE_RUN} == ONE_RUN
    assert {key: getattr(config, key) for key in kept} == kept
    assert config.nestegg_dir == tmp_path


def test_a_mirror_for_one_run_keeps_its_source_builds_without_their_ci(tmp_path: Path) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(
        "nestegg:\n  source_builds:\n    - name: lib\n      repo_type: git\n"
        "      repo_url: https://example.com/lib.git\n      ci: {watch: [main]}\n"
    )
    config = load_config(path)
    assert [build.ci is not None for build in config.source_builds] == [True]
    (build,) = config.for_one_run().source_builds
    assert (build.name, build.repo_url, build.ci) == ("lib", "https://example.com/lib.git", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nestegg: {port: abc}", "nestegg.port: expected an integer, got str 'abc'"),
        ("nestegg: {port: 70000}", "nestegg.port: expected a port number 0-65535, got 70000"),
        ("nestegg: {prot: 1}", "nestegg.prot: unknown key 'prot'"),
        ("other: {}", "other: unknown key 'other'"),
        ("nestegg: [1, 2]", "nestegg: expected a mapping, got list"),
        ("nestegg: {index-url: 'ftp://example.com/x'}", "'ftp://example.com/x' is not an http(s) URL"),
        ("nestegg: {index-url: 'example.com'}", "'example.com' is not an http(s) URL"),
        ("nestegg: {offline: maybe}", "nestegg.offline: expected yes/no"),
        ("nestegg: {ttl: -1}", "nestegg.ttl: expected a number of seconds >= 0"),
        (
            "nestegg: {index_url: 'https://example.com/a/', index-url: 'https://example.com/b/'}",
            "nestegg.index-url: sets index_url as nestegg.index_url does; keep one",
        ),
        ("nestegg: {timeout: -5}", "nestegg.timeout: expected a number of seconds > 0, got -5"),
        ("nestegg: {timeout: 0}", "nestegg.timeout: expected a number of seconds > 0, got 0"),
        ("nestegg: {threads: 0}", "nestegg.threads: expected an integer >= 1, got 0"),
        ("nestegg: {threads: 100000}", "nestegg.threads: expected an integer 1-512, got 100000"),
        ("nestegg: {public_url: 'http://[::1'}", "nestegg.public_url: 'http://[::1' is not an http(s) URL"),
        ("nestegg: {source_builds: {}}", "nestegg.source_builds: expected a list"),
        (
            "nestegg: {source_builds: [{name: a, repo_type: svn, repo_url: x}]}",
            "nestegg.source_builds[0].repo_type: expected 'git' or 'hg', got 'svn'",
        ),
        ("nestegg: {source_builds: [{name: a, repo_type: git}]}", "source_builds[0].repo_url: is required"),
        (
            "nestegg: {source_builds: [{name: a, repo_type: git, repo_url: x,"
            " versions: [{version: x.y.z}]}]}",
            "versions[0].version: 'x.y.z' is not a valid version",
        ),
        (
            "nestegg: {source_builds: [{name: a, repo_type: git, repo_url: x, colour: red}]}",
            "source_builds[0].colour: unknown key",
        ),
        # refused by the builds too, at the first build: said at start
        (
            "nestegg: {source_builds: [{name: a, repo_type: git, repo_url: x,"
            " versions: [{version: '1.0', tag: --upload-pack=x}]}]}",
            "source_builds[0].versions[0].tag: '--upload-pack=x' is not a branch or tag name",
        ),
        (
            "nestegg: {source_builds: [{name: a, repo_type: hg, repo_url: x,"
            " versions: [{version: '1.0', tag: '1.0 rc'}]}]}",
            "source_builds[0].versions[0].tag: '1.0 rc' is not a branch or tag name",
        ),
        (
            "nestegg: {source_builds: [{name: a, repo_type: git, repo_url: x,"
            " versions: [{version: '1.0', dist_file: a-1.0.tgz}]}]}",
            "versions[0].dist_file: invalid distribution filename 'a-1.0.tgz': expected a wheel (.whl) or",
        ),
        ("nestegg: {port: 1\n", "line"),
        (
            "nestegg: {max_page_size: lots}",
            "nestegg.max_page_size: expected a size like 500M or 20G, got str 'lots'",
        ),
        ("nestegg: {max_metadata_size: 0}", "nestegg.max_metadata_size: expected a size like 500M"),
        ("nestegg: {max_file_size: [20G]}", "nestegg.max_file_size: expected a size like 500M"),
        ("nestegg: {fetch_ahead: -1}", "nestegg.fetch_ahead: expected a size like 500M or 20G, got int -1"),
        ("nestegg: {fetch_ahead: yes}", "nestegg.fetch_ahead: expected a size like 500M or 20G, got bool"),
        ("nestegg: {page_deadline: 0}", "nestegg.page_deadline: expected a number of seconds > 0, got 0"),
        ("nestegg: {page_deadline: soon}", "nestegg.page_deadline: expected a number of seconds >= 0"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


PASSWORD = "pw-S3CRET"  # noqa: S105 - the secrets the errors must not show
TOKEN = "abcdefghijklmnopqrstuvwxyz-S3CRET"  # noqa: S105


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"nestegg:\n  upstreams:\n    url: http://u:{PASSWORD}@127.0.0.1:9/simple\n",
            "nestegg.upstreams: expected a list, got dict {'url': 'http://u:***@127.0.0.1:9/simple'}",
        ),
        (
            f"nestegg:\n  upstreams:\n    - http://u:{PASSWORD}@127.0.0.1:9/simple\n",
            "nestegg.upstreams[0]: expected a mapping, got str 'http://u:***@127.0.0.1:9/simple'",
        ),
        (
            f"nestegg:\n  upstreams:\n    - {{url: [http://{TOKEN}@127.0.0.1:9/simple], projects: [a]}}\n",
            "nestegg.upstreams[0].url: expected a non-empty string, got list ['http://***@127.0.0.1:9/simple']",
        ),
        (
            f"nestegg:\n  index_url: [http://u:{PASSWORD}@127.0.0.1:9/simple]\n",
            "nestegg.index_url: expected a non-empty string, got list ['http://u:***@127.0.0.1:9/simple']",
        ),
        (  # a blank in the password: the whole string is taken as one URL
            f"nestegg:\n  index_url: ['http://u:{PASSWORD} x@127.0.0.1:9/simple']\n",
            "got list ['http://u:***@127.0.0.1:9/simple']",
        ),
        (
            f"nestegg:\n  index_url: 'http://u:{PASSWORD}@127.0.0.1:9/sim ple'\n",
            "nestegg.index_url: 'http://u:***@127.0.0.1:9/sim ple' is not an http(s) URL",
        ),
        (
            f"nestegg:\n  public_url: 'http://u:{PASSWORD}@127.0.0.1:9/py pi'\n",
            "nestegg.public_url: 'http://u:***@127.0.0.1:9/py pi' is not an http(s) URL",
        ),
        (
            f"nestegg:\n  source_builds: [{{name: a, repo_type: git, repo_url: [https://{TOKEN}:@example.com/a]}}]\n",
            "nestegg.source_builds[0].repo_url: expected a non-empty string, got list ['https://***@example.com/a']",
        ),
        (
            f"nestegg:\n  http://u:{PASSWORD}@example.com/simple/: 1\n",
            "nestegg.http://u:***@example.com/simple/: unknown key 'http://u:***@example.com/simple/'",
        ),
        # a secret setting: its type only, however it is spelled or nested
        (f"nestegg:\n  ci_token: [{TOKEN}]\n", "nestegg.ci_token: expected a non-empty string, got list"),
        (
            f"nestegg:\n  ci-token: {{a: {TOKEN}}}\n",
            "nestegg.ci-token: expected a non-empty string, got dict",
        ),
        (
            f"nestegg:\n  ci_token: {PASSWORD}\n",
            "nestegg.ci_token: expected a token of at least 16 characters, got 9",
        ),
        (f"nestegg:\n  - ci_token: {TOKEN}\n", "nestegg: expected a mapping, got list [{'ci_token': '***'}]"),
        (
            f"- nestegg: {{ci-token: {TOKEN}}}\n",
            "top level: expected a mapping, got list [{'nestegg': {'ci-token': '***'}}]",
        ),
    ],
    ids=[
        "upstreams-a-mapping",
        "upstream-a-string",
        "upstream-url-a-list",
        "index-url-a-list",
        "password-with-a-blank",
        "index-url-invalid",
        "public-url-invalid",
        "repo-url-a-list",
        "key-a-url",
        "ci-token-a-list",
        "ci-token-a-mapping",
        "ci-token-short",
        "nestegg-a-list",
        "document-a-list",
    ],
)
def test_an_error_shows_no_secret(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).endswith(message) or f"{message} " in str(info.value), str(info.value)
    assert "S3CRET" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", 64 * 1024**2),
        ("fetch_ahead: 16M", 16 * 1024**2),
        ("fetch-ahead: 1000", 1000),
        ("fetch_ahead: 0", 0),
        ("fetch_ahead: '0'", 0),
        ("fetch_ahead: no", 0),
    ],
)
def test_fetch_ahead_is_a_size_or_no(tmp_path: Path, text: str, size: int) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(f"nestegg: {{{text}}}\n")
    assert load_config(path).fetch_ahead == size


def test_limits_of_upstream_answers(tmp_path: Path) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(
        "nestegg: {max_page_size: 8M, max-metadata-size: 100k, page_deadline: 2.5, max_file_size: 1G}"
    )
    config = load_config(path)
    assert (config.max_page_size, config.max_metadata_size) == (8 * 1024**2, 100 * 1024)
    assert (config.page_deadline, config.max_file_size) == (2.5, 1024**3)
    defaults = Config()
    assert (defaults.max_page_size, defaults.max_metadata_size) == (64 * 1024**2, 16 * 1024**2)
    assert (defaults.page_deadline, defaults.max_file_size) == (120.0, 20 * 1024**3)


def test_missing_named_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yml")


@pytest.mark.parametrize(
    ("repo_type", "tag", "message"),
    [
        # revision expressions: each would build another commit than a tag's under the version
        (
            "git",
            "HEAD~1",
            "'HEAD~1' is not a branch or tag name: git names hold no '~': it reads as a revision",
        ),
        ("git", "v1^", "'v1^' is not a branch or tag name: git names hold no '^'"),
        ("git", "v1~2", "'v1~2' is not a branch or tag name: git names hold no '~'"),
        ("git", "'@{u}'", "'@{u}' is not a branch or tag name: git names hold no '@{'"),
        ("git", "main:path", "'main:path' is not a branch or tag name: git names hold no ':'"),
        ("git", "v1..v2", "'v1..v2' is not a branch or tag name: git names hold no '..'"),
        ("git", "HEAD", "'HEAD' is not a branch or tag name: HEAD is no tag: name the tag (or branch)"),
        ("git", "'v*'", "'v*' is not a branch or tag name: git names hold no '*'"),
        ("git", "v1.lock", "'v1.lock' is not a branch or tag name: no part of a git name"),
        ("git", "a//b", "'a//b' is not a branch or tag name: git names neither start nor end with '/'"),
        ("hg", "tip", "'tip' is not a branch or tag name: 'tip' is a revision hg reserves, not a tag"),
        ("hg", "'.'", "'.' is not a branch or tag name: '.' is a revision hg reserves"),
        ("hg", "'42'", "'42' is not a branch or tag name: hg names are no whole numbers"),
        ("hg", "'1.0:2.0'", "'1.0:2.0' is not a branch or tag name: hg names hold no ':'"),
        # a revset, which hg evaluates where it can (CI polls a local repository with identify)
        (
            "hg",
            "'first(all())'",
            "'first(all())' is not a branch or tag name: a name holding '()' reads as an hg",
        ),
        (
            "hg",
            "'max(all())'",
            "'max(all())' is not a branch or tag name: a name holding '()' reads as an hg",
        ),
        ("hg", "v1~2", "'v1~2' is not a branch or tag name: a name holding '~' reads as an hg revset, not"),
        ("hg", "'a&b'", "'a&b' is not a branch or tag name: a name holding '&' reads as an hg revset, not"),
        ("hg", "'x#y[0]'", "'x#y[0]' is not a branch or tag name: a name holding '#[]' reads as an hg"),
        (
            "hg",
            "13a2ba489df4" + "0" * 28,
            "'13a2ba489df4" + "0" * 28 + "' is not a branch or tag name: it is a commit id, not a tag",
        ),
    ],
)
def test_a_tag_is_a_tag_or_branch_name_never_a_revision(
    tmp_path: Path, repo_type: str, tag: str, message: str
) -> None:
    path = tmp_path / "nestegg.yml"
    for key in (f"versions: [{{version: '1.0', tag: {tag}}}]", f"ci: {{watch: [ok, {tag}]}}"):
        path.write_text(
            f"nestegg: {{source_builds: [{{name: a, repo_type: {repo_type}, repo_url: x, {key}}}]}}"
        )
        where = "versions[0].tag" if key.startswith("versions") else "ci.watch[1]"
        if tag == "HEAD" and where == "ci.watch[1]":  # what CI watches by default: the default branch
            assert load_config(path).source_builds[0].ci == CISettings(watch=("ok", "HEAD"))
            continue
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).startswith(f"{path}: nestegg.source_builds[0].{where}: {message}")
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("repo_type", "tags"),
    [
        ("git", ["v1.0", "1.0.0", "release/1.x", "2", "v1@2", "r_1-2+local"]),
        ("hg", ["v1.0", "1.0.0", "1_0", "1.0-rc1", "v1+local", "release/1.x", "default"]),
    ],
)
def test_tag_and_branch_names_are_read(tmp_path: Path, repo_type: str, tags: list[str]) -> None:
    path = tmp_path / "nestegg.yml"
    versions = ", ".join(f"{{version: '{i}.0', tag: '{tag}'}}" for i, tag in enumerate(tags, 1))
    build = f"{{name: a, repo_type: {repo_type}, repo_url: x, versions: [{versions}]}}"
    path.write_text(f"nestegg: {{source_builds: [{build}]}}")
    assert [v.tag for v in load_config(path).source_builds[0].versions] == tags


def test_a_version_that_is_no_tag_name_needs_its_tag(tmp_path: Path) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(
        "nestegg: {source_builds: [{name: a, repo_type: hg, repo_url: x, versions: [{version: '2024'}]}]}"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: nestegg.source_builds[0].versions[0].tag: is required: the version '2024' is no tag name "
        "(hg names are no whole numbers: it reads as a revision number, not a tag)"
    )
    path.write_text(
        "nestegg: {source_builds: [{name: a, repo_type: git, repo_url: x, versions: [{version: '2024'}]}]}"
    )
    assert load_config(path).source_builds[0].versions[0].tag == "2024"


@pytest.mark.parametrize(
    "name",
    ["v1.0", "HEAD~1", "v1^", "@{u}", "main:path", "v1..v2", "v*", "a//b", "/a", "a/", ".a", "a/.b",
     "a.lock", "a.", "@", "a@b", "release/1.x", "a\\b", "a?", "a[1]"],
)  # fmt: skip
def test_git_names_are_checked_as_git_checks_them(name: str) -> None:
    """The config's rule is git's own (``git check-ref-format``), for a tag of that name."""
    checked = subprocess.run(["git", "check-ref-format", f"refs/tags/{name}"], check=False)
    assert (ref_problem(name, "git") is None) is (checked.returncode == 0 and name != "@")


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("1.0", "1.0"),  # YAML reads an unquoted 1.0 as a float: the seed's configs rely on the string
        ("1.10", "1.10"),  # the float 1.1: another release, another tag
        ("2", "2"),
        ("010", "010"),  # the int 8 in YAML 1.1
        ("1_000", "1_000"),
        ("1e3", "1e3"),
        ("'1.10'", "1.10"),
        ("1.10.0", "1.10.0"),
    ],
)
def test_yaml_scalars_as_versions_and_tags_are_read_as_written(
    tmp_path: Path, written: str, read: str
) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text(
        "nestegg:\n  port: 7654\n  source_builds:\n"
        f"  - {{name: a, repo_type: git, repo_url: x, versions: [{{version: 1.0, tag: {written}}}]}}\n"
    )
    config = load_config(path)
    assert config.source_builds[0].versions[0].tag == read
    assert config.source_builds[0].versions[0].version == "1.0"
    assert type(config.port) is int  # a number read as a number is a plain one


@pytest.mark.parametrize(
    ("first", "second", "shown"),
    [
        ("1.1.0", "'1.1'", "'1.1' is listed already, as '1.1.0'"),
        ("1.0", "1.0", "'1.0' is listed already, as '1.0'"),
    ],
)
def test_a_version_listed_twice_is_an_error(tmp_path: Path, first: str, second: str, shown: str) -> None:
    """Which entry's build would be served under it was the last one's, whatever its tag."""
    path = tmp_path / "nestegg.yml"
    path.write_text(
        "nestegg:\n  source_builds:\n  - {name: a, repo_type: git, repo_url: x, versions: "
        f"[{{version: {first}, tag: v1}}, {{version: {second}, tag: main}}]}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: nestegg.source_builds[0].versions[1].version: {shown}; keep one"


def test_pip_index_url_order(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none"), "PIP_CONFIG_FILE": os.devnull}
    default = pip_index_url(env)
    assert default.startswith("https://")  # pip's built-in default, read from pip
    user = tmp_path / ".config" / "pip" / "pip.conf"
    user.parent.mkdir(parents=True)
    user.write_text("[global]\nindex-url = https://example.com/user/\n")
    env.pop("PIP_CONFIG_FILE")
    assert pip_index_url(env) == "https://example.com/user/"
    named = tmp_path / "named.conf"
    named.write_text(
        "[global]\nindex_url = https://example.com/named/\n[install]\nindex-url = https://example.com/install/\n"
    )
    env["PIP_CONFIG_FILE"] = str(named)
    assert pip_index_url(env) == "https://example.com/install/"
    env["PIP_INDEX_URL"] = "https://example.com/env/"
    assert pip_index_url(env) == "https://example.com/env/"


def test_config_default_upstream_follows_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://example.com/from-pip")
    assert Config().upstream_url == "https://example.com/from-pip/"


def test_the_readme_lists_every_setting_as_declared() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.rst").read_text(encoding="utf-8")
    begin = readme.index(".. begin settings")
    listed = readme[readme.index("\n\n", begin) + 2 : readme.index("\n.. end settings", begin)]
    expected = settings_rst(Config)
    assert listed == expected, (
        f"the settings list of README.rst is not the declarations': make it\n{expected}"
    )


def test_every_field_of_the_config_is_a_declared_setting() -> None:
    names = [field.name for field, _ in declared(Config)]
    assert [f.name for f in fields(Config) if f.name != "source"] == names  # every field but the file's
    assert {key: name for key, name in keys(Config).items() if key != name} == {}  # index-url: by its dashes


BAD_URLS = [
    "http://[::1",
    "http://example.com:99999/simple/",
    "http://example.com:abc/simple/",
    "http://example.com:0/simple/",
    "http://example.com/simple/?page=1",
    "http://example.com/simple/#top",
    "http://exa mple.com/simple/",
    "http://example.com/sim\x7fple/",
    "ftp://example.com/simple/",
    "not a url",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize(
    ("where", "key"),
    [("--index-url", "index_url"), ("--public-url", "public_url"), ("nestegg.yml", "index_url"),
     ("nestegg.yml", "public_url"), ("$NESTEGG_INDEX_URL", "index_url"),
     ("$NESTEGG_PUBLIC_URL", "public_url"), ("$PIP_INDEX_URL", "index_url")],
)  # fmt: skip
def test_a_url_that_cannot_be_an_index_or_the_mirrors_is_one_line_naming_where(
    tmp_path: Path, url: str, where: str, key: str
) -> None:
    path = tmp_path / "nestegg.yml"
    path.write_text("nestegg: {}\n")
    environ = {"PIP_CONFIG_FILE": os.devnull}
    overrides: dict[str, Any] = {}
    if where == "nestegg.yml":
        path.write_text(f"nestegg:\n  {key}: {json.dumps(url)}\n")
    elif where.startswith("$"):
        environ[where[1:]] = url
    else:
        overrides[key] = url
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ=environ, **environ_settings(environ), **overrides)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: nestegg.{key}: " if where == "nestegg.yml" else f"{where}")
    assert "is not an http(s) URL of " in message


@pytest.mark.parametrize(
    ("key", "given", "kept"),
    [
        (
            "index_url",
            " https://user:token@example.com:8443/simple/ ",
            "https://user:token@example.com:8443/simple/",
        ),
        ("index_url", "http://[::1]:8080/simple", "http://[::1]:8080/simple"),
        ("public_url", "https://example.com/pypi/ ", "https://example.com/pypi"),
    ],
)
def test_urls_are_kept_without_the_blanks_around_them(
    tmp_path: Path, key: str, given: str, kept: str
) -> None:
    overrides: dict[str, Any] = {key: given}
    assert getattr(load_config(environ={"PIP_CONFIG_FILE": os.devnull}, **overrides), key) == kept


def test_the_index_pip_uses_is_checked_naming_the_file_that_sets_it(tmp_path: Path) -> None:
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text("[global]\nindex-url = http://example.com:99999/simple/\n")
    environ = {
        "PIP_CONFIG_FILE": str(pip_conf),
        "HOME": str(tmp_path),
        "XDG_CONFIG_DIRS": str(tmp_path / "none"),
    }
    with pytest.raises(ConfigError, match=rf"^{pip_conf}: index-url \(the index pip uses\): "):
        load_config(environ=environ)
    # a configured index_url is the upstream: pip's is not looked at
    assert load_config(environ=environ, index_url="https://example.com/simple/").index_url


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, {}),
        ({"NESTEGG_OFFLINE": " Yes "}, {"offline": True}),
        ({"NESTEGG_OFFLINE": ""}, {"offline": False}),
        ({"NESTEGG_CACHE_DIR": "~/nest"}, {"nestegg_dir": Path("~/nest").expanduser()}),
        ({"NESTEGG_CACHE_DIR": " "}, {}),
        ({"NESTEGG_INDEX_URL": "https://example.com/simple/"}, {"index_url": "https://example.com/simple/"}),
        ({"NESTEGG_PUBLIC_URL": "https://example.com/pypi/"}, {"public_url": "https://example.com/pypi"}),
    ],
)
def test_environ_settings(variables: dict[str, str], expected: dict[str, object]) -> None:
    assert environ_settings(variables) == expected


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://alice:pw@[::1", "http://***@[::1"),
        ("http://TOKEN@example.com:99999/simple/", "http://***@example.com:99999/simple/"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_a_url_in_a_message_is_masked_even_unparsable(url: str, masked: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={}, index_url=url)
    assert repr(masked) in str(raised.value)
    assert "pw" not in str(raised.value)
    assert "TOKEN" not in str(raised.value)
