"""Wheels rebuilt from installed distributions."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import zipfile
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from .repack import RepackError, repack


@pytest.mark.parametrize("name", ["packaging", "hatchling", "PyYAML"])
def test_repacked_wheel_is_complete_and_consistent(tmp_path: Path, name: str) -> None:
    dist = importlib.metadata.distribution(name)
    wheel = repack(name, tmp_path)
    project, version, _, tags = parse_wheel_filename(wheel.name)
    assert (project, str(version)) == (dist.metadata["Name"].lower(), dist.version)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (record_name,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        assert names[-1] == record_name
        rows = list(csv.reader(io.StringIO(archive.read(record_name).decode())))
        assert sorted(row[0] for row in rows) == sorted(names)
        for path, digest, size in rows:
            if path == record_name:
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={expected}", len(data)), path
        assert not [n for n in names if n.endswith((".pyc", "/INSTALLER", "/REQUESTED", "/direct_url.json"))]
        assert not [n for n in names if n.startswith("..")]
        metadata = archive.read(record_name.replace("RECORD", "METADATA"))
    assert metadata == Path(str(dist.locate_file(record_name.replace("RECORD", "METADATA")))).read_bytes()
    binary = any(str(f).endswith(".so") for f in dist.files or ())
    assert (str(next(iter(tags))) == "py3-none-any") is not binary


def test_repacking_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first = repack("packaging", tmp_path / "a").read_bytes()
    assert repack("packaging", tmp_path / "b").read_bytes() == first


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-distribution-here", r"distribution 'no-such-distribution-here' is not installed"),
        ("tox-nestegg", r"distribution 'tox-nestegg' is an editable install"),
    ],
)
def test_what_cannot_be_repacked(tmp_path: Path, name: str, message: str) -> None:
    # in site-packages only: a checkout on sys.path has an egg-info of its own
    site_packages = str(importlib.metadata.distribution("pytest").locate_file(""))
    with pytest.raises(RepackError, match=message):
        repack(name, tmp_path, path=[site_packages])
