"""Uploads: the legacy upload API as twine and uv publish use it, and every refusal PyPI would give."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, cast

import pytest
import requests
from packaging.utils import NormalizedName

from nestegg_core import Mirror
from nestegg_core.cli import main
from nestegg_core.config.credentials import NOT_A_TOKEN, make_token, set_password
from nestegg_core.http import uploads
from nestegg_core.storage import private
from nestegg_core.storage.fs import atomic_file
from nestegg_core.testing import find_uv, installer_env, make_venv
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import FullDisk, MirrorFactory

USER, PASSWORD = "alice", "correct horse"
WRONG = "not the password"
JSON = "application/vnd.pypi.simple.v1+json"


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.txt"
    set_password(path, USER, PASSWORD)
    return path


@pytest.fixture
def server(make_mirror: MirrorFactory, users: Path) -> Mirror:
    return make_mirror(credentials_file=users)


@pytest.fixture
def dists(tmp_path: Path) -> Path:
    return tmp_path / "dists"


def wheel(dists: Path, name: str = "up-pkg", version: str = "1.0", **spec: Any) -> Path:
    return make_wheel(PackageSpec(name=name, version=version, **spec), dists)


def form(path: Path, **changes: str | None) -> dict[str, str]:
    """The fields twine sends for ``path``, with ``changes`` (None drops a field)."""
    name, version = path.name.split("-")[:2]
    version = version.removesuffix(".tar.gz")
    fields: dict[str, str | None] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name.replace("_", "-"),
        "version": version,
        "filetype": "bdist_wheel" if path.name.endswith(".whl") else "sdist",
        "pyversion": "py3" if path.name.endswith(".whl") else "source",
        "sha256_digest": hashlib.sha256(path.read_bytes()).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest(),
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def post(
    server: Mirror,
    path: Path,
    *,
    filename: str | None = None,
    auth: tuple[str, str] | None = (USER, PASSWORD),
    url: str = "/legacy/",
    **changes: str | None,
) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        files = {"content": (filename or path.name, path.read_bytes(), "application/octet-stream")}
        return session.post(
            server.url + url, data=form(path, **changes), files=files, auth=auth, allow_redirects=False
        )


# the happy paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/legacy/", "/legacy", "/"])
def test_upload_at_every_endpoint_without_redirect(server: Mirror, dists: Path, url: str) -> None:
    path = wheel(dists)
    answer = post(server, path, url=url)
    assert answer.status_code == 200, answer.text
    assert answer.text == f"published {path.name}\n"
    page = requests.get(server.url + "/simple/up-pkg/", headers={"Accept": JSON}, timeout=30)
    files = page.json()["files"]
    assert [f["filename"] for f in files] == [path.name]
    assert files[0]["hashes"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert files[0]["core-metadata"]  # the wheel's METADATA is served (PEP 658)


def test_same_bytes_again_change_nothing(server: Mirror, dists: Path) -> None:
    path = wheel(dists)
    assert post(server, path).status_code == 200
    page = server.repository.private.page(NormalizedName("up-pkg"))
    assert page is not None
    record = page.files[0]
    again = post(server, path)
    assert again.status_code == 200
    assert "nothing changed" in again.text
    page = server.repository.private.page(NormalizedName("up-pkg"))
    assert page is not None
    assert page.files[0] == record


@pytest.mark.parametrize(
    "auth", [None, (USER, "wrong"), ("nobody", PASSWORD)], ids=["none", "wrong", "unknown"]
)
def test_an_upload_refused_before_its_body_is_read_has_its_access_log_line(
    server: Mirror, dists: Path, caplog: pytest.LogCaptureFixture, auth: tuple[str, str] | None
) -> None:
    with caplog.at_level(logging.INFO, logger="nestegg_core.access"):
        refused = post(server, wheel(dists), auth=auth)
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:  # logged once the answer is out
            time.sleep(0.01)
    assert refused.status_code in (401, 403), refused.text
    [line] = [r.getMessage() for r in caplog.records if r.name == "nestegg_core.access"]
    assert f'"POST /legacy/" {refused.status_code} {len(refused.content)} ' in line, line


def test_token_user_uploads(
    server: Mirror, users: Path, dists: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = make_token("ci")
    set_password(users, "ci", token)
    with caplog.at_level(logging.INFO, logger="nestegg_core.http.uploads"):
        assert post(server, wheel(dists), auth=("__token__", token)).status_code == 200
    # the log names the user whose password matched, not the name the client sent
    assert "upload of up-pkg/up_pkg-1.0-py3-none-any.whl by 'ci': published" in caplog.messages
    # a password (even a right one) is no token: refused with what to do instead
    refused = post(server, wheel(dists, version="2.0"), auth=("__token__", PASSWORD))
    assert refused.status_code == 403
    assert refused.text == NOT_A_TOKEN + "\n"


# refusals -----------------------------------------------------------------------------------


def test_other_bytes_under_a_known_filename(server: Mirror, dists: Path, tmp_path: Path) -> None:
    assert post(server, wheel(dists)).status_code == 200
    other = wheel(tmp_path / "other", summary="different bytes, same filename")
    answer = post(server, other)
    assert answer.status_code == 400
    assert answer.reason.startswith("File already exists ('up_pkg-1.0-py3-none-any.whl')")
    assert answer.text.startswith("File already exists")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "uploads need credentials"),
        ((USER, "wrong"), "invalid credentials for user 'alice'"),
        (("mallory", PASSWORD), "invalid credentials for user 'mallory'"),
        (("__token__", "wrong"), "the password sent with __token__ is not a nestegg token: make one with"),
        (("__token__", make_token(USER)), "invalid credentials for user '__token__'"),
    ],
)
def test_credentials_are_required(
    server: Mirror, dists: Path, auth: tuple[str, str] | None, message: str
) -> None:
    answer = post(server, wheel(dists), auth=auth)
    assert answer.status_code == 403
    assert answer.reason == message or answer.reason.startswith(message)
    assert server.repository.private.page(NormalizedName("up-pkg")) is None


def test_no_credentials_file_means_no_uploads(make_mirror: MirrorFactory, dists: Path) -> None:
    answer = post(make_mirror(), wheel(dists))
    assert answer.status_code == 403
    assert "set credentials_file in nestegg.yml" in answer.reason
    assert "nestegg passwd USER" in answer.text


@pytest.mark.parametrize(
    ("filename", "changes", "message"),
    [
        ("other_pkg-1.0-py3-none-any.whl", {}, "filename 'other_pkg-1.0-py3-none-any.whl' does not match"),
        ("up_pkg-2.0-py3-none-any.whl", {}, "does not match project 'up-pkg' version '1.0'"),
        ("up_pkg-1.0.exe", {}, "invalid distribution filename 'up_pkg-1.0.exe'"),
        ("up-pkg-1.0-py3-none-any.whl", {}, "invalid distribution filename"),
        # tags packaging reads as any text between the dashes: pip would find no wheel in them
        ("up_pkg-1.0-py3-none-any .whl", {}, "its tags 'py3-none-any ' are not made of letters, digits"),
        ("up_pkg-1.0-py3-none-any#x.whl", {}, "its tags 'py3-none-any#x' are not made of letters, digits"),
        ("up_pkg-1.0-py3-none-" + "x" * 210 + ".whl", {}, ": 234 characters, over the 224 nestegg stores"),
        ("up_pkg-1.0.tar.bz2", {}, "expected a wheel (.whl) or an sdist (.tar.gz or .zip)"),
        (None, {"sha256_digest": "0" * 64}, "sha256_digest '000"),
        (None, {"blake2_256_digest": "f" * 64}, "blake2_256_digest 'fff"),
        (None, {"md5_digest": "abc"}, "md5_digest 'abc' does not match"),
        (None, {"filetype": "sdist"}, "filetype 'sdist' does not match"),
        (None, {":action": "submit"}, "unsupported :action 'submit'"),
        (None, {"protocol_version": "2"}, "unsupported protocol_version '2'"),
        (None, {"name": None}, "missing or invalid project name None"),
        (None, {"name": "bad name!"}, "missing or invalid project name 'bad name!'"),
        (None, {"version": "not a version"}, "missing or invalid version 'not a version'"),
    ],
)
def test_bad_uploads_are_400(
    server: Mirror, dists: Path, filename: str | None, changes: dict[str, str | None], message: str
) -> None:
    answer = post(server, wheel(dists), filename=filename, auth=(USER, PASSWORD), url="/legacy/", **changes)
    assert answer.status_code == 400
    assert message in answer.reason
    assert message in answer.text
    assert server.repository.private.names() == []


def test_wheel_with_metadata_of_another_project(server: Mirror, dists: Path) -> None:
    path = wheel(dists, name="real-name")
    renamed = path.with_name("up_pkg-1.0-py3-none-any.whl")
    path.rename(renamed)
    answer = post(server, renamed, name="up-pkg")
    assert answer.status_code == 400
    assert "holds metadata of project 'real-name'" in answer.reason


def test_too_large(make_mirror: MirrorFactory, users: Path, dists: Path) -> None:
    server = make_mirror(credentials_file=users, max_upload_size=10_000)
    answer = post(server, wheel(dists, payload_size=20_000))
    assert answer.status_code == 413
    assert "over the limit of 10000 bytes (max_upload_size)" in answer.reason
    assert not list((server.config.nestegg_dir / "tmp" / "uploads").iterdir())
    assert post(server, wheel(dists, name="small")).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b"{}", "expected a multipart/form-data body"),
        ("multipart/form-data", b"", "expected a multipart/form-data body with a boundary"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb",
         "malformed multipart/form-data body"),
        ("multipart/form-data; boundary=xyz", b"garbage", "malformed multipart/form-data body"),
        ("multipart/form-data; boundary=xyz", b"--xyz--\r\n", "unsupported :action None"),
        ("multipart/form-data; boundary=xyz",
         b"--xyz\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\n\xff\xfe\r\n--xyz--\r\n",
         "the 'content' field has no filename: send the distribution as a file"),
    ],
)  # fmt: skip
def test_malformed_bodies(server: Mirror, content_type: str, body: bytes, message: str) -> None:
    answer = requests.post(
        server.url + "/legacy/",
        data=body,
        headers={"Content-Type": content_type},
        auth=(USER, PASSWORD),
        timeout=30,
    )
    assert answer.status_code == 400
    assert message in answer.reason


# a full disk --------------------------------------------------------------------------------


def fill_the_disk(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Make the disk full at one write of an upload: its body, or one of the files it publishes."""
    if where == "body":
        new_file = uploads._FormReader._new_file

        def full(self: uploads._FormReader, suffix: str) -> tuple[IO[bytes], Path]:
            handle, path = new_file(self, suffix)
            return cast(IO[bytes], FullDisk(handle, 0)), path

        monkeypatch.setattr(uploads._FormReader, "_new_file", full)
        return

    def half_written(path: Path, *_args: Any, root: Path | None = None, **_kwargs: Any) -> None:
        with atomic_file(path, root=root) as handle:
            disk = FullDisk(handle, 10)
            disk.write(b"x" * 10)
            disk.write(b"x" * 10)

    if where == "file":
        monkeypatch.setattr(private, "copy_atomic", lambda _source, target, **kw: half_written(target, **kw))
        return
    write_atomic = vars(private)["write_atomic"]  # the store's, as the private store calls it

    def full_at(path: Path, data: bytes, **kwargs: Any) -> Any:
        if path.name.endswith(f".{where}"):
            half_written(path, **kwargs)
        return write_atomic(path, data, **kwargs)

    monkeypatch.setattr(private, "write_atomic", full_at)


@pytest.mark.parametrize("where", ["body", "metadata", "file", "json"])
@pytest.mark.parametrize("earlier", [False, True], ids=["new-name", "new-version"])
def test_a_full_disk_is_a_507_and_leaves_nothing_listed(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    users: Path,
    dists: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    earlier: bool,
) -> None:
    upstream.add("up-pkg", "0.1")  # the upstream's project of that name, until one is uploaded here
    server = make_mirror(credentials_file=users)
    store = server.repository.private
    before = []
    if earlier:
        old = wheel(dists, version="0.9")
        assert post(server, old).status_code == 200
        before = [old.name]
    shown = requests.get(server.url + "/simple/up-pkg/", headers={"Accept": JSON}, timeout=30).json()
    path = wheel(dists, payload_size=50_000)
    fill_the_disk(monkeypatch, where)
    answer = post(server, path)
    assert answer.status_code == 507, answer.text
    assert "disk is full" in answer.reason
    assert answer.text.count("\n") == 1
    assert "disk is full" in answer.text
    # nothing half-written: no file, record or metadata of it, no temporary file, no name made private
    assert requests.get(server.url + "/simple/up-pkg/", headers={"Accept": JSON}, timeout=30).json() == shown
    folder = store.root / "up-pkg"
    if earlier:  # the earlier file as it was, and nothing else
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            n + s for n in before for s in ("", ".json", ".metadata")
        )
    else:
        assert not folder.exists()
    assert not [
        p for p in server.config.nestegg_dir.rglob("*") if p.name.startswith((".upload-", f".{path.name}"))
    ]
    said = [r for r in caplog.records if "disk is full" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    # room again: the same upload goes through
    monkeypatch.undo()
    assert post(server, path).status_code == 200
    assert store.page(NormalizedName("up-pkg")) is not None


@pytest.mark.slow
def test_twine_is_told_the_disk_is_full(server: Mirror, dists: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill_the_disk(monkeypatch, "body")
    done = twine(server, wheel(dists, payload_size=50_000))
    assert done.returncode != 0
    assert "507" in done.stdout + done.stderr
    assert "disk is full" in done.stdout + done.stderr
    assert not (server.repository.private.root / "up-pkg").exists()


# real clients -------------------------------------------------------------------------------


def twine(
    server: Mirror, *paths: Path, password: str = PASSWORD, user: str = USER
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
        "--repository-url", f"{server.url}/legacy/", "--username", user, "--password", password,
        *map(str, paths),
    ]  # fmt: skip
    env = installer_env(PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    env = {k: v for k, v in env.items() if not k.startswith("TWINE_")}
    return run(command, env=env)


def uv_publish(
    server: Mirror, *paths: Path, password: str = PASSWORD, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    uv = find_uv()
    assert uv is not None
    login = ["--token", token] if token else ["--username", USER, "--password", password]
    command = [uv, "publish", "--publish-url", f"{server.url}/legacy/", *login, *map(str, paths)]
    return run(command, env=installer_env())


@pytest.mark.slow
def test_twine_and_uv_publish_then_pip_and_uv_install(server: Mirror, dists: Path, tmp_path: Path) -> None:
    twined = [
        make_wheel(PackageSpec(name="Twined.Pkg", version="1.0", requires_dist=("uv-published>=2",)), dists),
        make_sdist(PackageSpec(name="Twined.Pkg", version="1.0"), dists),
    ]
    published = [
        make_wheel(PackageSpec(name="uv_published", version="2.0"), dists),
        make_sdist(PackageSpec(name="uv_published", version="2.0"), dists),
    ]
    done = twine(server, *twined)
    assert done.returncode == 0, done.stdout + done.stderr
    done = uv_publish(server, *published)
    assert done.returncode == 0, done.stdout + done.stderr

    # the same files again: 200, nothing changes, both clients are content
    assert twine(server, *twined).returncode == 0
    assert uv_publish(server, *published).returncode == 0

    # other bytes: twine shows the reason phrase, uv the body
    other = make_wheel(PackageSpec(name="Twined.Pkg", version="1.0", summary="changed"), tmp_path / "o")
    refused = twine(server, other)
    assert refused.returncode != 0
    assert "400" in refused.stderr + refused.stdout
    assert "File already exists" in refused.stderr + refused.stdout
    refused = twine(server, other, password=WRONG)
    assert "403" in refused.stderr + refused.stdout
    refused = uv_publish(server, other, password=WRONG)
    assert refused.returncode != 0
    # uv wraps its errors to a width it takes from where it runs (wrapped under pytest-xdist)
    assert "invalid credentials for user 'alice'" in " ".join(refused.stderr.split())

    python = make_venv(tmp_path / "venv")
    pip = [str(python), "-m", "pip", "install", "--no-cache-dir", "twined-pkg==1.0"]
    done = run(pip, env=installer_env(server.index_url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uv_published-2.0-py3-none-any.whl" in done.stdout
    uv = find_uv()
    assert uv is not None
    command = [uv, "pip", "install", "--no-cache", "--python", str(python), "--reinstall", "--no-binary",
               "uv-published", "twined-pkg"]  # fmt: skip
    done = run(command, env=installer_env(server.index_url))
    assert done.returncode == 0, done.stdout + done.stderr
    check = [str(python), "-c", "import twined_pkg, uv_published; print(uv_published.__version__)"]
    assert run(check).stdout.strip() == "2.0"


@pytest.mark.slow
def test_twine_and_uv_publish_with_a_generated_token(
    server: Mirror,
    users: Path,
    dists: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = users.parent / "nestegg.yml"
    config.write_text(f"nestegg: {{credentials_file: {users}}}\n")
    assert main(["--config", str(config), "passwd", "ci", "--generate"]) == 0
    token = capsys.readouterr().out.strip()  # the token alone on stdout
    done = twine(server, wheel(dists, name="by-twine"), user="__token__", password=token)
    assert done.returncode == 0, done.stdout + done.stderr
    done = uv_publish(server, wheel(dists, name="by-uv"), token=token)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("by-twine", "by-uv"):
        assert requests.get(f"{server.url}/simple/{name}/", timeout=30).status_code == 200
    # a user's password as a token: refused, and each client shows what to do
    refused = twine(server, wheel(dists, name="by-twine", version="2.0"), user="__token__", password=PASSWORD)
    assert refused.returncode != 0
    assert "403" in refused.stdout + refused.stderr
    refused = uv_publish(server, wheel(dists, name="by-uv", version="2.0"), token=PASSWORD)
    assert refused.returncode != 0
    assert NOT_A_TOKEN in " ".join(refused.stderr.split())  # unwrapped, as above
