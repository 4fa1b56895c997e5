"""State files of upstream pages: written and read a line (a slice of a column) at a time."""

from __future__ import annotations

import errno
import json
import logging
import os
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from packaging.utils import NormalizedName

from nestegg_core.errors import Unavailable
from nestegg_core.simple.models import DistFile, Hashes, ProjectPage
from nestegg_core.storage import store as store_module
from nestegg_core.storage.pagestate import PageState, StateHeader
from nestegg_core.storage.store import CacheStore

NAME = NormalizedName("demo")
DIGEST = "ab" * 32

FILES = (
    DistFile(
        filename="demo-1.0-py3-none-any.whl",
        url="https://files.example.com/demo-1.0-py3-none-any.whl",
        hashes=Hashes("sha256", DIGEST),
        requires_python=">=3.9",
        size=1234,
        upload_time="2024-01-02T03:04:05.000006Z",
        core_metadata=Hashes("sha256", "cd" * 32),
    ),
    DistFile(
        filename="demo-1.0.tar.gz",
        url="https://files.example.com/demo-1.0.tar.gz",
        hashes={"sha256": DIGEST, "md5": "ef" * 16},
        requires_python=">=3.9",
        yanked="",
        core_metadata=Hashes(),
    ),
    DistFile(filename="demo-2.0.zip", yanked="broken: use 2.1", origin="private"),
)
STATE = PageState(
    page=ProjectPage.build(NAME, FILES, ["0.9"]), etag='"v1"', last_modified="Tue, 01 Oct 2024", checked=12.5
)


@pytest.fixture
def store(tmp_path: Path) -> CacheStore:
    return CacheStore(tmp_path, "https://example.com/simple/")


def test_a_state_file_is_a_column_per_line_and_reads_back_whole(store: CacheStore) -> None:
    store.write_page(STATE)
    text = store.page_path(NAME).read_bytes()
    lines = text.split(b"\n")
    assert len(lines) == 2 + 9  # the header, each of the nine columns, the end
    assert lines[-1] == b"}}"
    assert json.loads(text)["columns"]["filename"] == [dist.filename for dist in FILES]  # still JSON
    read = store.read_page(NAME)
    assert read == STATE
    assert read is not None
    assert (read.page.versions, read.page.listed) == (("0.9",), True)  # the index's list as it gave it


def test_versions_made_from_the_files_are_made_again_on_reading(store: CacheStore) -> None:
    # an index without a list (HTML): the file versions are not saved as if the index listed them
    state = PageState(page=ProjectPage.build(NAME, FILES), etag=None, last_modified=None, checked=1.0)
    store.write_page(state)
    assert "versions" not in json.loads(store.page_path(NAME).read_bytes())
    read = store.read_page(NAME)
    assert read is not None
    assert (read.page.versions, read.page.listed) == (("1.0", "2.0"), False)
    # so that a file kept beside them adds its version, as a page without a list has it
    kept = ProjectPage.build(
        NAME, (*read.page.files, DistFile(filename="demo-0.5.tar.gz")), read.page.index_versions
    )
    assert kept.versions == ("1.0", "2.0", "0.5")


def _files_form(state: PageState) -> bytes:
    """The oldest form: a list of file mappings."""
    data = json.loads(b"".join(state.to_bytes()))
    del data["columns"]
    data["files"] = [dist.to_json() for dist in state.page.files]
    return json.dumps(data).encode()


def _one_line_form(state: PageState) -> bytes:
    """The form before columns had lines of their own."""
    return json.dumps(json.loads(b"".join(state.to_bytes()))).encode()


def _line_per_column_form(state: PageState) -> bytes:
    """The form before a column had a line per 2,048 values: a line each, however long."""
    return b"".join(state.to_bytes()).replace(b",\n", b",")


def _large_state(files: int) -> PageState:
    """A page of ``files`` wheels of 50 versions (real pages have few), each with its hashes."""
    return PageState(
        page=ProjectPage.build(
            NAME,
            (
                DistFile(
                    filename=f"demo-1.{n % 50}-{n}-py3-none-any.whl",
                    url=f"https://files.example.com/{n:064x}/demo-1.{n % 50}-{n}-py3-none-any.whl",
                    hashes=Hashes("sha256", f"{n:064x}"),
                    core_metadata=Hashes("sha256", f"{n + 1:064x}"),
                )
                for n in range(files)
            ),
        ),
        checked=1.0,
    )


LARGE = _large_state(5000)


@pytest.mark.parametrize(
    "older",
    [_one_line_form, _files_form, _line_per_column_form],
    ids=["one-line", "file-mappings", "line-per-column"],
)
@pytest.mark.parametrize("state", [STATE, LARGE], ids=["small", "large"])
def test_older_forms_are_read(
    store: CacheStore, older: Callable[[PageState], bytes], state: PageState
) -> None:
    store.page_path(NAME).parent.mkdir(parents=True)
    store.page_path(NAME).write_bytes(older(state))
    assert store.read_page(NAME) == state


def test_a_large_column_has_a_line_per_2048_values(store: CacheStore) -> None:
    store.write_page(LARGE)
    lines = store.page_path(NAME).read_bytes().split(b"\n")
    assert len(lines) == 2 + 9 * 3  # the header, three lines for each column (5,000 values), the end
    assert [line[:12] for line in lines[1:4]] == [b'"filename":[', b'"demo-1.48-2', b'"demo-1.46-4']
    assert lines[1].endswith(b",")
    assert lines[3].endswith(b"]")


def _replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    return lambda text: text.replace(old, new)


DAMAGES = {
    "empty": (lambda _: b"", "Expecting value"),
    "cut": (lambda text: text[: text.index(b'"hashes"')], "ends before its last column"),
    "no-end": (lambda text: text[:-2], "ends before its last column"),
    "short-column": (_replace(b'"size":[1234,null,null]', b'"size":[1234,null]'), "different lengths"),
    "not-a-list": (_replace(b'"size":[1234,null,null]', b'"size":{}'), 'damaged column line b\',"size":{}'),
    "bad-filename": (_replace(b'"demo-2.0.zip"', b'"../demo-2.0.zip"'), "bad filename"),
    "missing-column": (_replace(b'"upload_time":', b'"uploaded":'), "upload_time"),
    "split-line": (_replace(b'"url":["', b'"url":["\n'), 'damaged column line b\',"url":["\\n\''),
    "unnamed-column": (_replace(b',"url":[', b',["'), 'damaged column line b\',[""https:'),
    "unended-column": (_replace(b']\n,"size"', b',\n,"size"'), "Expecting value"),
    "not-an-object": (lambda _: b"[]", "state is a list, not an object"),
    "unnamed": (_replace(b'"name":"demo"', b'"name":5'), "state names no project: 5"),
    "huge-size": (_replace(b'"size":[1234,', b'"size":[1e999,'), "cannot convert float infinity"),
    "deep": (_replace(b'"yanked":[null', b'"yanked":[' + b"[" * 100_000 + b"]" * 100_000), "recursion"),
    "empty-line": (_replace(b'\n,"url"', b'\n,\n,"url"'), "damaged column line b',\\n'"),
}


@pytest.mark.parametrize(("damage", "reason"), DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_state_file_is_a_miss_with_a_warning(
    store: CacheStore, caplog: pytest.LogCaptureFixture, damage: Callable[[bytes], bytes], reason: str
) -> None:
    store.write_page(STATE)
    path = store.page_path(NAME)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="nestegg_core.storage.store"):
        assert store.read_page(NAME) is None
    (record,) = caplog.records
    assert "ignoring damaged cache state" in record.getMessage()
    assert reason in record.getMessage()


def test_a_state_that_cannot_be_opened_for_want_of_descriptors_is_no_damage(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Taken for damage, the page counted as never cached: refused while the upstream was down."""
    store.write_page(STATE)

    def no_descriptor(*_args: object, **_kwargs: object) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(store_module, "open_read", no_descriptor)
    with caplog.at_level(logging.WARNING), pytest.raises(Unavailable, match="too many open files"):
        store.read_page(NAME)
    assert "damaged" not in caplog.text
    monkeypatch.undo()
    assert store.read_page(NAME) is not None  # whole, as it was


@pytest.mark.parametrize(
    "column", [b',"signature":[null,null,null]', b', "sha3_256" : [null,\nnull,null]', b',"\\"x\\"":[]']
)
def test_a_column_a_later_release_adds_is_left_aside(store: CacheStore, column: bytes) -> None:
    store.write_page(STATE)
    path = store.page_path(NAME)
    text = path.read_bytes()
    path.write_bytes(text.replace(b"\n}}", b"\n" + column + b"\n}}"))
    assert store.read_page(NAME) == STATE


def test_files_sharing_a_value_share_one_string(store: CacheStore) -> None:
    store.write_page(STATE)
    read = store.read_page(NAME)
    assert read is not None
    first, second, _ = read.page.files
    assert first.requires_python is second.requires_python
    assert first.origin is second.origin


@pytest.mark.parametrize("files", [1, 2047, 2048, 2049, 10_000])
def test_a_large_state_is_written_and_read_a_slice_of_a_column_at_a_time(
    store: CacheStore, files: int
) -> None:
    """Beside the page, a slice of one column at a time: not its columns, as text, whole (the
    bounds tell the two apart from 2,047 files on for writing, at 10,000 for reading)."""
    state = _large_state(files)
    tracemalloc.start()
    try:
        store.write_page(state)
        _, written = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        read = store.read_page(NAME)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == state
    # a slice of 2,048 files, its URLs or hashes as text then as JSON, is under 1 MB; the
    # columns of 10,000 files took 3.9 MB to write
    assert written < 1_000_000
    # beside the page read: a slice, and the columns' lists of references to the values the
    # page keeps (9 columns, 8 bytes a file); whole columns took 1.6 MB for 10,000 files
    assert peak - held - before < 600_000 + 9 * 8 * files


@pytest.mark.parametrize(
    ("state", "confirmed", "header"),
    [
        (STATE, None, StateHeader(etag='"v1"', last_modified="Tue, 01 Oct 2024", checked=12.5)),
        (
            replace(STATE, digest="12" * 32),
            None,
            StateHeader(etag='"v1"', last_modified="Tue, 01 Oct 2024", checked=12.5, digest="12" * 32),
        ),
        # the note of the page given again since: its time
        (replace(STATE, etag=None, last_modified=None), 40.0, StateHeader(checked=40.0)),
        (STATE, 10.0, StateHeader(etag='"v1"', last_modified="Tue, 01 Oct 2024", checked=12.5)),  # older
    ],
    ids=["validators", "digest", "confirmed", "confirmed-before"],
)
def test_the_header_of_a_state_is_its_first_line(
    store: CacheStore, state: PageState, confirmed: float | None, header: StateHeader
) -> None:
    store.write_page(state)
    if confirmed is not None:
        store.confirm(NAME, confirmed)
    assert store.read_page_header(NAME) == header
    read = store.read_page(NAME)
    assert read is not None
    assert (read.digest, read.checked) == (state.digest, header.checked)


@pytest.mark.parametrize("older", [_one_line_form, _files_form], ids=["one-line", "file-mappings"])
def test_a_state_of_an_older_form_has_no_header_nor_entry_it_is_read_whole(
    store: CacheStore, older: Callable[[PageState], bytes]
) -> None:
    store.page_path(NAME).parent.mkdir(parents=True)
    store.page_path(NAME).write_bytes(older(STATE))
    assert store.read_page_header(NAME) is None
    assert store.read_page_entry(NAME, FILES[0].filename) is None
    assert store.read_page(NAME) == STATE


@pytest.mark.parametrize("note", [b"nan\n", b"inf\n", b"soon\n", b""], ids=["nan", "inf", "text", "empty"])
def test_a_damaged_note_of_a_page_given_again_is_no_note(store: CacheStore, note: bytes) -> None:
    store.write_page(STATE)
    store.confirmed.mkdir(parents=True)
    (store.confirmed / NAME).write_bytes(note)
    assert store.confirmed_at(NAME) is None
    assert store.read_page(NAME) == STATE


def test_the_times_of_the_checks_are_those_of_the_states_and_their_confirmations(
    store: CacheStore, tmp_path: Path
) -> None:
    """What ``ahead.checked_together`` reads: when each page was last had, a scan of two folders."""
    for name in ("a", "b", "c"):
        store.write_page(PageState(page=ProjectPage.build(name, ()), checked=1.0))
    store.confirm(NormalizedName("b"), 2.0)
    for name in ("a", "b"):
        os.utime(store.page_path(NormalizedName(name)), (1000, 1000))
    os.utime(store.confirmed / "b", (3000, 3000))
    (store.pages / "Not_Normalized.json").write_text("{}")  # no page of the store's own naming
    (store.pages / ".a.json.tmp").write_text("{}")
    times = store.checked_times(most=10)
    assert times is not None
    assert set(times) == {"a", "b", "c"}
    assert (times[NormalizedName("a")], times[NormalizedName("b")]) == (1000, 3000)  # its confirmation's
    assert times[NormalizedName("c")] > 3000  # written just now
    assert store.checked_times(most=3) is None  # past it, not guessed: 5 entries in the folder
    assert CacheStore(tmp_path / "empty", "https://example.com/simple/").checked_times(most=10) == {}


def _twice(state: PageState) -> PageState:
    """``state`` with its first file listed again last, at another URL (a state saved before the
    parser dropped the second)."""
    first = state.page.files[0]
    again = replace(first, url=first.url + "?again")
    return replace(state, page=ProjectPage.build(NAME, (*state.page.files, again), state.page.index_versions))


def _written(state: PageState) -> bytes:
    return b"".join(state.to_bytes())


@pytest.mark.parametrize(
    ("state", "form"),
    [
        (STATE, _written),
        (_large_state(2048), _written),  # one whole line a column
        (_large_state(2049), _written),  # a second line of one value
        (LARGE, _written),
        (LARGE, _line_per_column_form),
        (_twice(STATE), _written),  # the first entry of a name listed twice, as the page has it
        (replace(STATE, digest="12" * 32), _written),
    ],
    ids=["small", "2048", "2049", "large", "line-per-column", "listed-twice", "digest"],
)
def test_an_entry_is_read_from_the_state_alone_as_its_page_lists_it(
    store: CacheStore, state: PageState, form: Callable[[PageState], bytes]
) -> None:
    store.page_path(NAME).parent.mkdir(parents=True)
    store.page_path(NAME).write_bytes(form(state))
    read = store.read_page(NAME)
    assert read is not None
    header = store.read_page_header(NAME)
    assert header is not None
    files = read.page.files
    # each file of a small page; of a large one, those at the ends of its lines too
    picks = {0, len(files) - 1, *range(2045, min(len(files), 2052)), *range(0, len(files), 97)}
    for index in sorted(pick for pick in picks if pick < len(files)):
        filename = files[index].filename
        assert store.read_page_entry(NAME, filename) == (header, read.page.file(filename)), index
    assert store.read_page_entry(NAME, "demo-9.9.tar.gz") == (header, None)
    assert store.read_page_entry(NAME, "demo-1.0.whl.metadata") == (header, None)  # no file's name


def test_an_entry_is_read_with_the_time_the_page_was_given_again(store: CacheStore) -> None:
    store.write_page(STATE)
    store.confirm(NAME, 40.0)
    assert store.read_page_entry(NAME, FILES[1].filename) == (
        StateHeader(etag='"v1"', last_modified="Tue, 01 Oct 2024", checked=40.0),
        FILES[1],
    )


# every damage but another file's name, which the entry's reading does not look at
ENTRY_DAMAGES = {key: damage for key, (damage, _) in DAMAGES.items() if key != "bad-filename"}


@pytest.mark.parametrize("damage", ENTRY_DAMAGES.values(), ids=ENTRY_DAMAGES.keys())
def test_no_entry_is_read_from_a_damaged_state(store: CacheStore, damage: Callable[[bytes], bytes]) -> None:
    store.write_page(STATE)
    path = store.page_path(NAME)
    path.write_bytes(damage(path.read_bytes()))
    assert store.read_page_entry(NAME, FILES[0].filename) is None
    assert store.read_page(NAME) is None  # the page is a miss too (and says why: above)


def test_no_entry_is_read_from_columns_cut_into_lines_unlike_the_filenames(store: CacheStore) -> None:
    store.write_page(LARGE)
    path = store.page_path(NAME)
    lines = path.read_bytes().split(b"\n")
    # the URLs' first two lines as one: every other column still has three lines
    url = next(index for index, line in enumerate(lines) if line.startswith(b',"url":['))
    path.write_bytes(b"\n".join([*lines[:url], lines[url] + lines[url + 1], *lines[url + 2 :]]))
    assert store.read_page_entry(NAME, LARGE.page.files[2048].filename) is None
    assert store.read_page_entry(NAME, LARGE.page.files[0].filename) is None


def test_no_entry_is_read_without_a_state(store: CacheStore) -> None:
    assert store.read_page_entry(NAME, FILES[0].filename) is None


@pytest.mark.parametrize(
    "column", [b',"signature":[null,null,null]', b', "sha3_256" : [null,\nnull,null]', b',"\\"x\\"":[]']
)
def test_an_entry_leaves_a_column_a_later_release_adds_aside(store: CacheStore, column: bytes) -> None:
    store.write_page(STATE)
    path = store.page_path(NAME)
    path.write_bytes(path.read_bytes().replace(b"\n}}", b"\n" + column + b"\n}}"))
    found = store.read_page_entry(NAME, FILES[2].filename)
    assert found is not None
    assert found[1] == FILES[2]
