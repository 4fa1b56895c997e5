"""``nestegg list``, ``yank`` and ``remove`` on the private store."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import NormalizedName

from nestegg_core.cli import main
from nestegg_core.storage.private import PrivateStore
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel


@pytest.fixture
def nest(tmp_path: Path) -> Path:
    store = PrivateStore(tmp_path / "nest" / "private")
    for version in ("1.0", "2.0"):
        spec = PackageSpec(name="My.Lib", version=version)
        store.add(make_wheel(spec, tmp_path / "dists"))
        store.add(make_sdist(spec, tmp_path / "dists"))
    store.add(make_wheel(PackageSpec(name="other", version="0.1"), tmp_path / "dists"))
    return tmp_path / "nest"


def nestegg(nest: Path, *argv: str) -> int:
    return main(["--config", str(nest.parent / "none.yml"), "--cache-dir", str(nest), *argv])


@pytest.fixture(autouse=True)
def _empty_config(tmp_path: Path) -> None:
    (tmp_path / "none.yml").write_text("nestegg: {}\n")


def test_list(nest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nestegg(nest, "list") == 0
    assert capsys.readouterr().out == "my-lib  1.0, 2.0\nother  0.1\n"
    assert nestegg(nest, "list", "My_Lib") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "my_lib-1.0-py3-none-any.whl",
        "my_lib-1.0.tar.gz",
        "my_lib-2.0-py3-none-any.whl",
        "my_lib-2.0.tar.gz",
    ]
    assert lines[0].split("  ")[1].endswith(" bytes")


def test_yank_and_undo(nest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nestegg(nest, "yank", "my-lib", "--version", "1.0", "--reason", "broken") == 0
    assert capsys.readouterr().out == (
        "yanked my_lib-1.0-py3-none-any.whl (broken)\nyanked my_lib-1.0.tar.gz (broken)\n"
    )
    store = PrivateStore(nest / "private")
    page = store.page(NormalizedName("my-lib"))
    assert page is not None
    assert [d.yanked for d in page.files] == ["broken", "broken", None, None]
    assert nestegg(nest, "list", "my-lib") == 0
    assert "  yanked: broken" in capsys.readouterr().out
    assert nestegg(nest, "yank", "my-lib", "my_lib-1.0.tar.gz", "--undo") == 0
    assert capsys.readouterr().out == "un-yanked my_lib-1.0.tar.gz\n"
    page = store.page(NormalizedName("my-lib"))
    assert page is not None
    assert [d.yanked for d in page.files] == ["broken", None, None, None]


def test_remove(nest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nestegg(nest, "remove", "my-lib", "my_lib-2.0.tar.gz") == 0
    assert nestegg(nest, "remove", "MY_LIB", "--version", "1") == 0
    assert capsys.readouterr().out == (
        "removed my_lib-2.0.tar.gz\nremoved my_lib-1.0-py3-none-any.whl\nremoved my_lib-1.0.tar.gz\n"
    )
    wheel = "my_lib-2.0-py3-none-any.whl"
    left = sorted(p.name for p in (nest / "private" / "my-lib").iterdir())
    assert left == [wheel, f"{wheel}.json", f"{wheel}.metadata"]


def test_a_name_whose_files_were_all_removed_is_listed_and_said_to_stay_private(
    nest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nestegg(nest, "remove", "other", "--version", "0.1") == 0
    capsys.readouterr()
    assert PrivateStore(nest / "private").is_private(NormalizedName("other"))  # as the server says
    assert nestegg(nest, "list") == 0
    assert capsys.readouterr().out == "my-lib  1.0, 2.0\nother  (no files left; the name stays private)\n"
    for argv in (["list", "Other"], ["remove", "other", "--version", "0.1"]):
        assert nestegg(nest, *argv) == 2
        assert capsys.readouterr().err == (
            "error: private project 'Other' has no files left: each was removed, and the name stays private "
            f"(remove the folder {nest / 'private' / 'other'} to let the upstream answer for it)\n"
        ).replace("'Other'", f"'{argv[1]}'")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "nothing"], "no private project 'nothing'"),
        (["remove", "my-lib"], "name either a FILENAME or --version V"),
        (["remove", "my-lib", "x.tar.gz", "--version", "1.0"], "name either a FILENAME or --version V"),
        (
            ["remove", "my-lib", "my_lib-9.0.tar.gz"],
            "private project 'my-lib' has no file 'my_lib-9.0.tar.gz'",
        ),
        (["yank", "my-lib", "--version", "9"], "private project 'my-lib' has no files of version '9'"),
        (["yank", "my-lib", "--version", "x y"], "invalid version 'x y'"),
        (["remove", "nothing", "--version", "1"], "no private project 'nothing'"),
    ],
)
def test_errors(nest: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert nestegg(nest, *argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
