"""The page models: hashes held compactly, and read back exactly as given; versions read safely."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest

from nestegg_core.simple.models import (
    MAX_VERSION,
    DistFile,
    Hashes,
    ProjectPage,
    can_check,
    has_unreadable_version,
    is_dist_filename,
    parse_number,
    parse_specifier,
    parse_version,
    version_of,
)

#: past Python's int-string limit (4300 digits): packaging raises ValueError, not InvalidVersion
HUGE = "1" * 5000

SHA256 = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("digest", "packed"),
    [
        (SHA256, True),
        ("ab", True),
        (SHA256.upper(), False),  # read back as given, not lowercased
        (SHA256[:-1], False),
        ("ab cd", False),
        ("not-hex", False),
        ("", True),
    ],
    ids=["sha256", "short", "uppercase", "odd", "spaced", "not-hex", "empty"],
)
def test_a_digest_reads_back_as_given(digest: str, packed: bool) -> None:
    hashes = Hashes("sha256", digest)
    assert hashes["sha256"] == digest
    assert hashes.get("sha256") == digest
    assert hashes.get("md5", "none") == "none"
    assert dict(hashes) == {"sha256": digest}
    assert hashes == {"sha256": digest}
    assert hashes == Hashes("sha256", digest)
    assert hash(hashes) == hash(Hashes("sha256", digest))
    assert isinstance(hashes._digest, bytes) == packed


def test_a_sha256_is_held_in_less_than_half_the_memory_of_its_text() -> None:
    held = Hashes("sha256", SHA256)._digest
    assert sys.getsizeof(held) < sys.getsizeof(SHA256) * 0.6


def test_no_hashes_is_empty() -> None:
    assert dict(Hashes()) == {}
    assert Hashes().get("sha256") is None
    with pytest.raises(KeyError):
        Hashes()["sha256"]


@pytest.mark.parametrize(
    ("filename", "dist"),
    [
        ("pkg-1.0-py3-none-any.whl", True),
        ("pkg-1.0.tar.gz", True),
        ("pkg-1.0.zip", True),
        ("PKG-1.0.TAR.GZ", True),  # old uploads in capitals
        ("pkg-1.0.tar.bz2", True),
        ("pkg-1.0.tgz", True),
        ("pkg-1.0.tar.xz", True),
        ("pkg-1.0.tar", True),
        ("pkg-1.0.tar.Z", True),
        ("pkg-1.0-py2.7.egg", True),
        ("pkg-1.0.win32.exe", True),
        ("pkg-1.0.win32.msi", True),
        ("pkg-1.0-1.noarch.rpm", True),
        ("pkg-1.0.dmg", True),
        ("python-pkg_1.0_all.deb", True),
        ("pkg-1.0.tar.gz.json", False),  # a record
        ("pkg-1.0-py3-none-any.whl.metadata", False),  # core metadata
        ("pkg-1.0.tar.gz.JSON", False),
        (".pkg-1.0.tar.gz.123.4.part", False),  # a download in progress
        (".pkg-1.0.tar.gz.abcd.tmp", False),  # a write in progress
        (".changed", False),
        (".generation", False),
        ("pkg-1.0.tar.gz.lock", False),
        (".pkg-1.0.tar.gz", False),
        ("README", False),
        ("index.html", False),
        ("pkg.json", False),
        ("", False),
        ("a/pkg-1.0.tar.gz", False),
        ("a\\pkg-1.0.tar.gz", False),
        ("pkg\x00-1.0.tar.gz", False),
        ("p" * 220 + ".whl", True),
        # over 224: its longest sidecar's temporary name would be over the 255 bytes of a name
        ("p" * 221 + ".whl", False),
        ("\u212a-1.0.tar.gz", False),  # KELVIN SIGN: k-1.0.tar.gz once normalized (NFKC)
        ("\uff4b-1.0-py3-none-any.whl", False),  # FULLWIDTH LATIN SMALL LETTER K
        ("caf\u00e9-1.0.tar.gz", False),  # the filename specs allow ASCII only
        ("pkg-1.0\n.tar.gz", False),
        ("pkg-1.0\x7f.tar.gz", False),
    ],
)
def test_only_distribution_filenames_are_files_of_a_store(filename: str, dist: bool) -> None:
    assert is_dist_filename(filename) is dist


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.0", "1.0"),
        ("1.0.post1.dev2+local.7", "1.0.post1.dev2+local.7"),
        ("9" * 250, "9" * 250),
        ("not a version", None),
        ("", None),
        (HUGE, None),  # ValueError from int(), not InvalidVersion
        ("1." + "1" * MAX_VERSION, None),  # readable, but longer than any real version
    ],
    ids=["plain", "every-part", "long-number", "invalid", "empty", "huge", "too-long"],
)
def test_parse_version(text: str, expected: str | None) -> None:
    version = parse_version(text)
    assert (None if version is None else str(version)) == expected


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        (">=3.8", True),
        (">=2.7, !=3.0.*, <4", True),
        ("===weird", True),
        ("", True),
        ("nonsense", False),
        (f">={HUGE}", False),  # packaging reads the version only at the first comparison
        (f"==3.{HUGE}.*", False),
        (f">=3.8, <{HUGE}", False),
        (", ".join([">=3.8"] * 200), False),
    ],
    ids=[
        "plain",
        "several",
        "arbitrary",
        "empty",
        "invalid",
        "huge",
        "huge-wildcard",
        "huge-second",
        "too-long",
    ],
)
def test_parse_specifier(text: str, readable: bool) -> None:
    specifier = parse_specifier(text)
    assert (specifier is not None) == readable
    if specifier is not None:
        specifier.contains("3.11", prereleases=True)  # never raises


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("17", 17), ("123456789", 123456789), ("1234567890", None), (HUGE, None), ("", None),
     ("1a", None), ("\u0663", None), ("-1", None)],
)  # fmt: skip
def test_parse_number(text: str, expected: int | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("filename", "version", "unreadable"),
    [
        ("pkg-1.0.tar.gz", "1.0", False),
        ("pkg-1.0-py3-none-any.whl", "1.0", False),
        ("pkg-latest.tar.gz", None, False),  # a legacy file: listed, without a version
        ("index.html", None, False),
        (f"pkg-{HUGE}.tar.gz", None, True),
        (f"pkg-{HUGE}.zip", None, True),
        (f"pkg-{HUGE}-py3-none-any.whl", None, True),
        (f"pkg-1.0-cp3{HUGE}-none-any.whl", "1.0", False),  # a tag: for compatible_only to judge
        ("pkg-" + "1" * 300 + ".tar.gz", None, True),  # readable by Python, too long for a version
    ],
    ids=["sdist", "wheel", "legacy", "other", "huge-sdist", "huge-zip", "huge-wheel", "huge-tag", "long"],
)
def test_versions_of_filenames(filename: str, version: str | None, unreadable: bool) -> None:
    assert version_of(filename) == version
    assert has_unreadable_version(filename) is unreadable


def test_a_page_leaves_out_versions_it_cannot_read() -> None:
    files = [DistFile(filename=f) for f in ("pkg-1.0.tar.gz", "pkg-legacy.zip")]
    page = ProjectPage.build("pkg", files, ["0.9", HUGE, "legacy version text", "1." + "1" * MAX_VERSION])
    assert [d.filename for d in page.files] == ["pkg-1.0.tar.gz", "pkg-legacy.zip"]
    # the index's list as it is (its files' 1.0 is not added to a list the index gave)
    assert page.versions == ("0.9", "legacy version text")


PEP700_FILES = ("pkg-0.6rc1.tar.gz", "pkg-69.3-py3-none-any.whl", "pkg-69.3.0.tar.gz", "pkg-2.0.tar.gz")


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        # the index's list passed through, each version once as the index spells it first
        (["0.6c1", "0.6rc1", "69.3.0", "69.3", "1.5"], ("0.6c1", "69.3.0", "1.5")),
        ([], ()),  # an empty list is a list: the files add nothing to it
        # no list (an HTML page, a JSON page before api-version 1.1): the files' versions, once each
        (None, ("0.6rc1", "69.3", "2.0")),
    ],
)
def test_pep700_versions_pass_the_index_list_through(
    versions: list[str] | None, expected: tuple[str, ...]
) -> None:
    page = ProjectPage.build("pkg", [DistFile(filename=f) for f in PEP700_FILES], versions)
    assert page.versions == expected
    assert page.index_versions == (None if versions is None else expected)


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        (["0.6c1", "69.3"], ("0.6c1", "69.3", "3.0")),  # private 69.3.0 is the listed 69.3
        (None, ("0.6rc1", "69.3.0", "2.0", "3.0")),  # private files come first, so spell first
    ],
)
def test_merged_private_files_add_their_versions_once(
    versions: list[str] | None, expected: tuple[str, ...]
) -> None:
    upstream = ProjectPage.build("pkg", [DistFile(filename=f) for f in PEP700_FILES], versions)
    private = [
        DistFile(filename=f, origin="private") for f in ("pkg-3.0.tar.gz", "pkg-69.3.0-py3-none-any.whl")
    ]
    merged = upstream.merged(private)
    assert set(merged.versions) == set(expected)
    assert len(merged.versions) == len(expected)


@pytest.mark.parametrize(
    ("algorithm", "checked"),
    [
        ("sha256", True),
        ("sha384", True),
        ("sha512", True),
        ("sha224", True),
        ("sha3_256", True),
        ("sha3_512", True),
        ("blake2b", True),
        ("blake2s", True),
        ("md5", True),
        ("sha1", True),
        ("shake_128", False),  # no length of its own: a page's digest says nothing
        ("shake_256", False),
        ("whirlpool", False),
        ("sha-256", False),  # OpenSSL takes it; PEP 503 names hashlib's algorithms
        ("SHA256", False),  # pages' names are lowercased before they are asked about
        ("", False),
        ("x" * 300, False),
    ],
)
def test_the_hashes_a_file_can_be_checked_with(algorithm: str, checked: bool) -> None:
    assert can_check(algorithm) is checked


def test_a_record_keeps_nestegg_s_own_sha256_apart_from_what_a_page_may_list() -> None:
    unvouched = DistFile(filename="a-1.0.tar.gz", size=3, own_sha256=SHA256)
    data = unvouched.to_json()
    assert data["hashes"] == {}
    assert data["own_sha256"] == SHA256
    back = DistFile.from_json(data)
    assert back.sha256 is None
    assert back.own_sha256 == SHA256
    # a vouched record lists it, and is written as before (a record of an earlier release)
    vouched = DistFile(filename="a-1.0.tar.gz", hashes={"md5": "ab", "sha256": SHA256}, own_sha256=SHA256)
    assert "own_sha256" not in vouched.to_json()
    assert DistFile.from_json(vouched.to_json()).own_sha256 == SHA256
    # the page's entry and the record of the same file are the same file (mirror.cached)
    assert unvouched == DistFile(filename="a-1.0.tar.gz", size=3)


def test_a_file_s_own_constructor_takes_every_field_by_name_with_the_field_s_default() -> None:
    # DistFile sets its slots itself (for speed): its signature must stay the dataclass's
    parameters = inspect.signature(DistFile).parameters
    assert list(parameters) == [field.name for field in dataclasses.fields(DistFile)]
    for field in dataclasses.fields(DistFile):
        assert parameters[field.name].kind is inspect.Parameter.KEYWORD_ONLY
        default = inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        assert parameters[field.name].default is default, field.name
    # each value lands in its own field, and the file stays frozen
    values = {field.name: object() for field in dataclasses.fields(DistFile)}
    dist = DistFile(**values)  # type: ignore[arg-type]
    assert {name: getattr(dist, name) for name in values} == values
    assert dist.with_changes(size=1).size == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        dist.size = 2  # type: ignore[misc]
