"""Credentials file, Basic auth, ``nestegg passwd``, and private_read_auth with real clients."""

from __future__ import annotations

import base64
import io
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from nestegg_core import Config
from nestegg_core.cli import main
from nestegg_core.config import credentials as auth
from nestegg_core.config.credentials import (
    NOT_A_TOKEN,
    Credentials,
    check_user_name,
    hash_password,
    make_token,
    read_credentials,
    refusal,
    set_password,
    token_user,
    verify_password,
)
from nestegg_core.errors import ConfigError
from nestegg_core.http.auth import basic_credentials, environ_user
from nestegg_core.serve.compose import create_app
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import Faults, MirrorFactory

# cheap parameters keep the tests fast; the format carries them, so verification needs nothing else
FAST = {"n": 2**4, "r": 1, "p": 1}


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("password", "attempt", "expected"),
    [
        ("secret", "secret", True),
        ("secret", "Secret", False),
        ("secret", "", False),
        ("pässwörd", "pässwörd", True),
        ("with:colon and space", "with:colon and space", True),
    ],
)
def test_hash_and_verify(password: str, attempt: str, expected: bool) -> None:
    encoded = hash_password(password, **FAST)
    assert encoded.startswith("scrypt$16$1$1$")
    assert verify_password(attempt, encoded) is expected


def test_hashes_are_salted() -> None:
    assert hash_password("same", **FAST) != hash_password("same", **FAST)


def test_default_parameters_are_slow_hashes() -> None:
    assert hash_password("x").startswith("scrypt$16384$8$1$")


def test_pbkdf2_lines_verify() -> None:
    import hashlib  # noqa: PLC0415

    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    encoded = f"pbkdf2_sha256$1000${b64(salt)}${b64(digest)}"
    assert verify_password("pw", encoded)
    assert not verify_password("other", encoded)


@pytest.mark.parametrize(
    "encoded",
    ["", "plain", "scrypt$x$8$1$AA$AA", "scrypt$16$1$1$!!$AA", "md5$abc", "scrypt$3$1$1$AAAA$AAAA"],
)
def test_malformed_hashes_never_verify(encoded: str) -> None:
    assert verify_password("", encoded) is False


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", "pw"), ("alice", "pw")),
        (basic("__token__", "tok:en"), ("__token__", "tok:en")),
        ("basic " + base64.b64encode(b"u:").decode(), ("u", "")),
        ("Bearer abc", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("", None),
    ],
)
def test_basic_credentials(header: str, expected: tuple[str, str] | None) -> None:
    assert basic_credentials({"HTTP_AUTHORIZATION": header}) == expected


@pytest.mark.parametrize("user", ["", "a:b", " alice", "__token__", "bad\nname"])
def test_invalid_user_names(user: str) -> None:
    with pytest.raises(ConfigError, match=r"user name|__token__"):
        check_user_name(user)


def test_set_password_adds_changes_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "credentials"
    assert set_password(path, "alice", "one") is False
    assert set_password(path, "bob", "two") is False
    path.write_text("# our users\n" + path.read_text())
    assert set_password(path, "alice", "three") is True
    users = read_credentials(path)
    assert sorted(users) == ["alice", "bob"]
    assert verify_password("three", users["alice"])
    assert path.read_text().startswith("# our users\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert set_password(path, "bob", None) is True
    assert sorted(read_credentials(path)) == ["alice"]
    assert not list(tmp_path.glob("sub/.*tmp"))


def test_malformed_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("# comment\n\nalice:plaintext-password\n")
    with pytest.raises(ConfigError, match=r"credentials:3: expected 'user:scrypt\$\.\.\.'") as info:
        read_credentials(path)
    assert "plaintext-password" not in str(info.value)


def test_credentials_check_users_tokens_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    token = make_token("ci")
    path.write_text(f"alice:{hash_password('pw', **FAST)}\nci:{hash_password(token, **FAST)}\n")
    credentials = Credentials(path)
    assert credentials.check("alice", "pw")
    assert credentials.check("alice", "pw")  # the second time from the verified cache
    assert not credentials.check("alice", token)
    assert credentials.check("ci", token)  # a token is its user's password
    assert credentials.user_of("__token__", token) == "ci"
    assert not credentials.check("__token__", "pw")  # a password is no token, even a right one
    assert not credentials.check("__token__", "nope")
    assert not credentials.check("__token__", make_token("alice"))
    assert not credentials.check("nobody", "pw")
    path.write_text(f"alice:{hash_password('new', **FAST)}\n")
    assert not credentials.check("alice", "pw")
    assert credentials.check("alice", "new")
    assert environ_user(credentials, {"HTTP_AUTHORIZATION": basic("alice", "new")}) == "alice"
    assert environ_user(credentials, {}) is None


@pytest.mark.parametrize("user", ["ci", "alice@example.com", "ünïcode user", "a.b-c_d", "x" * 100])
def test_a_token_names_its_user(user: str) -> None:
    token = make_token(user)
    assert token.startswith("nestegg.")
    assert token_user(token) == user
    assert make_token(user) != token


@pytest.mark.parametrize(
    "password",
    [
        "correct horse",
        "kQ8sLx3Zc0f-Vw_1mN2bP4rT6yU8iO0aS2dF4gH6jK8",  # made by --generate before it named its user
        "nestegg.",
        "nestegg.Y2k.",
        "nestegg.Y2k.short",
        "nestegg..0123456789abcdefghij",
        "nestegg.Y2k.0123456789abcdefghij.more",
        "nestegg.Y2k=.0123456789abcdefghij",  # padding is not URL-safe base64 without it
        "nestegg.Y.0123456789abcdefghij",  # not base64 at all
        "nestegg./w.0123456789abcdefghij",  # not UTF-8
        "Nestegg.Y2k.0123456789abcdefghij",
        " nestegg.Y2k.0123456789abcdefghij",
    ],
)
def test_anything_else_is_no_token(password: str) -> None:
    assert token_user(password) is None
    assert refusal(("__token__", password)) == NOT_A_TOKEN
    assert refusal(("alice", password)) == "invalid credentials for user 'alice'"


def test_a_token_login_costs_one_password_check_however_many_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "credentials"
    tokens = {f"user{i}": make_token(f"user{i}") for i in range(30)}
    path.write_text("".join(f"{user}:{hash_password(token, **FAST)}\n" for user, token in tokens.items()))
    credentials = Credentials(path)
    checks: list[bytes] = []
    real = auth._scrypt

    def counted(password: str, salt: bytes, *args: int, **kwargs: int) -> bytes:
        checks.append(salt)
        return real(password, salt, *args, **kwargs)

    monkeypatch.setattr(auth, "_scrypt", counted)
    attempts = [
        ("a user's password", "not a token", 0),
        ("another user's token", make_token("user7").replace("nestegg.dXNlcjc", "nestegg.dXNlcjg"), 1),
        ("a wrong secret", make_token("user29"), 1),
        ("a user nobody is", make_token("nobody"), 1),  # as slow as a real check
        ("the right token", tokens["user29"], 1),
        ("the right token again", tokens["user29"], 0),  # from the verified cache
    ]
    for what, password, cost in attempts:
        checks.clear()
        expected = "user29" if password == tokens["user29"] else None
        assert credentials.user_of("__token__", password) == expected, what
        assert len(checks) == cost, what


def test_missing_file_has_no_users(tmp_path: Path) -> None:
    assert not Credentials(tmp_path / "none").check("alice", "pw")


# the command --------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "nestegg.yml"
    path.write_text(f"nestegg:\n  nestegg_dir: {tmp_path / 'nest'}\n  credentials_file: users.txt\n")
    return path


def test_passwd_reads_stdin(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["--config", str(config_file), "passwd", "alice"]) == 0
    assert "added user 'alice' to " in capsys.readouterr().err
    assert Credentials(config_file.parent / "users.txt").check("alice", "s3cret")
    monkeypatch.setattr("sys.stdin", io.StringIO("changed\n"))
    assert main(["--config", str(config_file), "passwd", "alice"]) == 0
    assert "changed user 'alice' in " in capsys.readouterr().err


def test_passwd_generates_a_token_and_deletes(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "passwd", "ci", "--generate"]) == 0
    token = capsys.readouterr().out.strip()
    assert token_user(token) == "ci"
    assert Credentials(config_file.parent / "users.txt").user_of("__token__", token) == "ci"
    assert main(["--config", str(config_file), "passwd", "ci", "--delete"]) == 0
    assert main(["--config", str(config_file), "passwd", "ci", "--delete"]) == 2
    assert "error: no user 'ci'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [(["--generate"], ""), ([], "s3cret\n")],
    ids=["generate", "stdin"],
)
def test_passwd_says_added_on_stderr_and_prints_only_the_token(
    config_file: Path, tmp_path: Path, argv: list[str], stdin: str
) -> None:
    # as a user's shell runs it: TOKEN=$(nestegg passwd ci --generate)
    command = [sys.executable, "-m", "nestegg_core", "--config", str(config_file), "passwd", "ci", *argv]
    users = config_file.parent / "users.txt"
    for said in ("added user 'ci' to", "changed user 'ci' in"):
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, check=False, cwd=tmp_path, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == f"{said} {users}\n"
        if argv:  # the token alone, a line of its own
            token = done.stdout.removesuffix("\n")
            assert token_user(token) == "ci"
            assert "\n" not in token
            assert Credentials(users).user_of("__token__", token) == "ci"
        else:
            assert done.stdout == ""
            assert Credentials(users).check("ci", "s3cret")


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["passwd", "alice"], "pw\n", "error: no credentials file: set credentials_file"),
        (["passwd", "a:b", "--file", "x"], "pw\n", "error: invalid user name 'a:b'"),
        (["passwd", "alice", "--file", "x"], "\n", "error: no password on stdin"),
    ],
)
def test_passwd_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NESTEGG_CONFIG", str(tmp_path / "empty.yml"))
    (tmp_path / "empty.yml").write_text("nestegg: {}\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "Traceback" not in err


# private_read_auth ----------------------------------------------------------------------------


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.txt"
    set_password(path, "reader", "pw")
    return path


def test_read_auth_guards_private_projects_only(
    make_mirror: MirrorFactory, users: Path, upstream: PrivateIndex, http: requests.Session, tmp_path: Path
) -> None:
    upstream.add("public-pkg", "1.0")
    mirror = make_mirror(credentials_file=users, private_read_auth=True, private_names=("reserved",))
    wheel = make_wheel(PackageSpec(name="secret-pkg", version="1.0"), tmp_path / "dists")
    mirror.repository.private.add(wheel)
    page, file = f"{mirror.url}/simple/secret-pkg/", f"{mirror.url}/files/secret-pkg/{wheel.name}"
    for url in (page, file, f"{mirror.url}/simple/reserved/", f"{mirror.url}/simple/Secret_Pkg/"):
        answer = http.get(url)
        assert answer.status_code == 401, url
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="nestegg"')
    assert http.get(page, auth=("reader", "wrong")).status_code == 401
    assert http.get(page, auth=("reader", "pw")).status_code == 200
    refused = http.get(page, auth=("__token__", "pw"))  # a password is no token
    assert (refused.status_code, refused.text) == (401, NOT_A_TOKEN + "\n")
    token = make_token("ci")
    set_password(users, "ci", token)
    assert http.get(page, auth=("__token__", token)).status_code == 200
    assert http.get(file, auth=("reader", "pw")).content == wheel.read_bytes()
    assert http.get(f"{mirror.url}/simple/reserved/", auth=("reader", "pw")).status_code == 404
    assert http.get(f"{mirror.url}/simple/public-pkg/").status_code == 200
    # the root index lists private names to those who may read them only
    assert "secret-pkg" not in http.get(f"{mirror.url}/simple/").text
    assert "public-pkg" in http.get(f"{mirror.url}/simple/").text
    assert "secret-pkg" in http.get(f"{mirror.url}/simple/", auth=("reader", "pw")).text


def test_without_read_auth_private_projects_are_open(
    make_mirror: MirrorFactory, users: Path, http: requests.Session, tmp_path: Path
) -> None:
    mirror = make_mirror(credentials_file=users)
    mirror.repository.private.add(make_wheel(PackageSpec(name="secret-pkg", version="1.0"), tmp_path))
    assert http.get(f"{mirror.url}/simple/secret-pkg/").status_code == 200


@pytest.mark.slow
def test_pip_and_uv_send_credentials_from_the_index_url(
    make_mirror: MirrorFactory, users: Path, faults: Faults, tmp_path: Path
) -> None:
    mirror = make_mirror(credentials_file=users, private_read_auth=True)
    mirror.repository.private.add(make_wheel(PackageSpec(name="secret-pkg", version="1.0"), tmp_path / "d"))
    python = make_venv(tmp_path / "venv")
    with_credentials = mirror.index_url.replace("http://", "http://reader:pw@")
    pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "secret-pkg"]
    refused = run(pip, env=installer_env(mirror.index_url))
    assert refused.returncode != 0
    assert "No matching distribution found for secret-pkg" in refused.stderr
    done = run(pip, env=installer_env(with_credentials))
    assert done.returncode == 0, done.stdout + done.stderr
    uv = find_uv()
    assert uv is not None
    command = [uv, "pip", "install", "--no-cache", "--python", str(python), "--reinstall", "secret-pkg"]
    done = run(command, env=installer_env(with_credentials))
    assert done.returncode == 0, done.stdout + done.stderr
    assert faults.count(prefix="/simple/secret-pkg") == 0


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda path: path.mkdir(), r"cannot read credentials file '.*creds': Is a directory"),
        (lambda path: path.write_text("alice:plain\n"), r"creds:1: expected 'user:scrypt\$\.\.\.'"),
        (lambda _path: None, None),  # not yet: said, and read once it exists
    ],
    ids=["directory", "malformed", "missing"],
)
def test_a_credentials_file_is_read_when_the_server_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: Callable[[Path], object], error: str | None
) -> None:
    path = tmp_path / "creds"
    make(path)
    config = Config(
        nestegg_dir=tmp_path / "nest", index_url="http://127.0.0.1:9/simple/", credentials_file=path
    )
    if error is not None:
        with pytest.raises(ConfigError, match=error):
            create_app(config)
        return
    with caplog.at_level(logging.WARNING, logger="nestegg_core.config.credentials"):
        create_app(config)
    assert f"credentials file {str(path)!r} does not exist: uploads are refused until" in caplog.text
