"""The fences around other projects' internals: each test fails saying what moved.

nestegg borrows a few private APIs, each in one module that names it, under an upper version
bound in setup.cfg: waitress (``nestegg_core.serve._waitress``), pip's default index
(``nestegg_core.config._pip``), tox's command handlers (``nestegg_core.toxrun._tox``) and the
threading module's exit functions (``nestegg_core.serve._threading``). A new
release that moves one of them fails here, by name, rather than in production. The page parser
also calls the json module's scanner, which its docs do not name (``nestegg_core.simple.parse``).
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from typing import Any

import pytest
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import Error

from nestegg_core.config._pip import default_index
from nestegg_core.serve import _threading

from .conftest import MirrorFactory

waitress_version = version("waitress")


# waitress -------------------------------------------------------------------------------------

# what nestegg_core.serve._waitress takes from waitress beyond its public API: a
# waitress that renames or drops one of these must fail here, by name, not in production
WAITRESS_INTERNALS = [
    (HTTPChannel, "_flush_outbufs_below_high_watermark"),  # a slow client's wait, and its deadline
    (HTTPChannel, "_flush_exception"),
    (HTTPChannel, "_flush_some"),
    (HTTPChannel, "parser_class"),  # the gate and the refusals
    (HTTPChannel, "task_class"),
    (HTTPChannel, "error_task_class"),  # the access log line of what waitress answers itself
    (ErrorTask, "execute"),
    (ErrorTask, "status"),
    (ErrorTask, "content_length"),
    (HTTPChannel, "received"),
    (HTTPChannel, "readable"),
    (HTTPChannel, "send_continue"),
    (HTTPChannel, "cancel"),
    (HTTPChannel, "check_client_disconnected"),  # what environ["waitress.client_disconnected"] calls
    (HTTPChannel, "del_channel"),  # a connection closed: the background may start once none is left
    (HTTPChannel, "request"),
    (HTTPChannel, "sent_continue"),
    (HTTPChannel, "total_outbufs_len"),
    (HTTPChannel, "will_close"),
    (HTTPRequestParser, "received"),
    (HTTPRequestParser, "parse_header"),
    (HTTPRequestParser, "headers_finished"),
    (HTTPRequestParser, "completed"),
    (HTTPRequestParser, "error"),
    (HTTPRequestParser, "body_rcv"),
    (HTTPRequestParser, "body_bytes_received"),
    (HTTPRequestParser, "content_length"),
    (HTTPRequestParser, "chunked"),
    (HTTPRequestParser, "expect_continue"),
    (HTTPRequestParser, "connection_close"),
    (WSGITask, "execute"),
    (WSGITask, "wrote_header"),  # whether an error of the app breaks a response off (_waitress._Task)
    (Error, "to_response"),
    (BaseWSGIServer, "maintenance"),  # the clean-up of idle connections and slow heads
    (HTTPChannel, "last_activity"),
    (HTTPChannel, "handle_close"),  # a client that takes nothing of its answer (_waitress._maintenance)
    (ThreadedTaskDispatcher, "handler_thread"),  # the paced workers
    (ThreadedTaskDispatcher, "set_thread_count"),
    (ThreadedTaskDispatcher, "active_count"),
    (ThreadedTaskDispatcher, "stop_count"),
]


@pytest.mark.parametrize(("owner", "name"), WAITRESS_INTERNALS, ids=lambda x: getattr(x, "__name__", x))
def test_waitress_still_has_what_nestegg_overrides(owner: type, name: str) -> None:
    assert hasattr(owner, name), f"waitress {waitress_version}: {owner.__qualname__}.{name} is gone"


def test_waitress_still_has_the_instance_state_nestegg_uses(make_mirror: MirrorFactory) -> None:
    mirror = make_mirror()
    waitress_server: Any = mirror._server
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the request's head read, its body awaited
            channels = list(waitress_server.active_channels.values())
            if channels and getattr(channels[0].request, "headers_finished", False):
                break
            time.sleep(0.01)
        [channel] = channels
        held = ("outbuf_lock", "requests_lock", "requests", "connected", "adj", "server", "addr", "_fileno")
        for name in held:
            assert hasattr(channel, name), f"waitress {waitress_version}: a channel has no {name!r}"
        assert hasattr(channel.outbuf_lock, "wait")
        assert hasattr(waitress_server.trigger, "pull_trigger")
        for name in ("active_channels", "_map", "adj"):
            assert hasattr(waitress_server, name), f"waitress {waitress_version}: the server has no {name!r}"
        assert "thunk" in inspect.signature(waitress_server.trigger.pull_trigger).parameters
        parser = channel.request  # the request whose body has not come yet
        for name in ("command", "path", "query", "headers", "version"):
            assert hasattr(parser, name), f"waitress {waitress_version}: a parsed request has no {name!r}"
    dispatcher = waitress_server.task_dispatcher
    for name in ("lock", "queue", "queue_cv", "thread_exit_cv", "threads"):
        assert hasattr(dispatcher, name), f"waitress {waitress_version}: the dispatcher has no {name!r}"
    assert hasattr(channel, "socket")
    environ_source = inspect.getsource(WSGITask.get_environment)
    assert (
        'environ["waitress.client_disconnected"] = self.channel.check_client_disconnected' in environ_source
    )
    assert "size" in inspect.signature(ReadOnlyFileBasedBuffer.prepare).parameters


@pytest.mark.parametrize(
    "line",
    [
        "chunk = outbuf.get(self.sendbuf_len)",
        "num_sent = self.send(chunk, do_close=do_close)",
        "outbuf.skip(num_sent, True)",
        "self.total_outbufs_len -= num_sent",
        "toclose = self.outbufs.pop(0)",
        "self.last_activity = time.time()",
    ],
)
def test_waitress_still_sends_its_buffers_as_the_copied_loop_does(line: str) -> None:
    """``_waitress._Channel._flush_some`` is waitress 3.0's loop with files sent by ``sendfile``:
    a waitress whose loop changed has the copy looked at again."""
    source = inspect.getsource(HTTPChannel._flush_some)
    assert line in source, f"waitress {waitress_version}: HTTPChannel._flush_some no longer has {line!r}"


def test_waitress_file_buffer_still_has_the_file_and_size_sendfile_uses() -> None:
    buffer = ReadOnlyFileBasedBuffer(io.BytesIO(b"abcdef"))
    assert buffer.prepare(4) == 4
    assert buffer.remain == 4, f"waitress {waitress_version}: ReadOnlyFileBasedBuffer has no remain"
    assert isinstance(buffer.file, io.BytesIO), f"waitress {waitress_version}: its file buffer has no file"


def test_waitress_still_takes_a_dispatcher_and_has_the_server_state_nestegg_uses(
    make_mirror: MirrorFactory,
) -> None:
    # create_server's "test shim" runs the paced dispatcher; _map and trigger close connections
    assert "_dispatcher" in inspect.signature(create_server).parameters, (
        f"waitress {waitress_version}: create_server takes no _dispatcher any more"
    )
    waitress_server: Any = make_mirror()._server
    for name in ("_map", "trigger", "task_dispatcher", "effective_port", "channel_class"):
        assert hasattr(waitress_server, name), f"waitress {waitress_version}: its server has no {name!r}"


# pip ------------------------------------------------------------------------------------------


def test_pip_still_has_its_default_index_where_nestegg_reads_it() -> None:
    # nestegg_core.config._pip: the upstream when nothing names one
    pip_version = version("pip")
    try:
        from pip._internal.models.index import PyPI  # noqa: PLC0415 - the fenced internal itself
    except ImportError as exc:
        pytest.fail(f"pip {pip_version}: pip._internal.models.index.PyPI is gone ({exc})")
    assert str(PyPI.simple_url).startswith("https://"), f"pip {pip_version}: PyPI.simple_url changed"
    assert default_index() == PyPI.simple_url


# tox ------------------------------------------------------------------------------------------


def test_tox_still_runs_the_command_handler_the_plugin_wraps() -> None:
    # nestegg_core.toxrun._tox: the mirror runs around state._options.cmd_handlers[command]
    import tox.run  # noqa: PLC0415 - tox's own modules, read for what they do
    from tox.config.cli.parse import Options  # noqa: PLC0415
    from tox.session.state import State  # noqa: PLC0415

    tox_version = version("tox")
    assert "cmd_handlers" in Options.__annotations__, f"tox {tox_version}: Options has no cmd_handlers"
    assert "self._options = options" in inspect.getsource(State.__init__), (
        f"tox {tox_version}: State keeps its options elsewhere than _options"
    )
    assert "state._options.cmd_handlers[state.conf.options.command]" in inspect.getsource(tox.run), (
        f"tox {tox_version}: tox.run no longer runs state._options.cmd_handlers[command]"
    )


# Python's json module ------------------------------------------------------------------------


def test_json_still_has_the_scanner_the_page_parser_calls() -> None:
    # nestegg_core.simple.parse: a page's entries are decoded by JSONDecoder.scan_once, which
    # raw_decode calls and the json module's docs do not name
    python = sys.version.split()[0]
    scan = getattr(json.JSONDecoder(), "scan_once", None)
    assert callable(scan), f"Python {python}: json.JSONDecoder has no scan_once"
    text = '[{"a": [1, {"b": null}]}, 2]'
    assert scan(text, 1) == ({"a": [1, {"b": None}]}, 24), f"Python {python}: scan_once answers otherwise"
    with pytest.raises(StopIteration):  # where no value starts
        scan(text, len(text))
    with pytest.raises(json.JSONDecodeError, match="Expecting ':' delimiter"):  # a bad value
        scan('{"a" 1}', 0)


# threading ------------------------------------------------------------------------------------


def test_threading_still_calls_its_exit_functions_before_it_joins_the_threads() -> None:
    """A function registered by ``before_threads_are_joined`` runs at exit while a thread that is
    no daemon still waits (here, on the event the function sets): the WSGI workers' stop."""
    code = (
        "import threading, time\n"
        "from nestegg_core.serve._threading import before_threads_are_joined\n"
        "done = threading.Event()\n"
        "threading.Thread(target=lambda: print('joined', done.wait(20), flush=True)).start()\n"
        "assert before_threads_are_joined(lambda: print('first', flush=True) or done.set())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (0, "first\njoined True\n"), (
        "threading._register_atexit moved (CPython " + sys.version.split()[0] + "): " + result.stderr
    )


def test_threading_calls_the_exit_function_before_concurrent_futures_waits_for_its_pools() -> None:
    """Registered after a pool's thread (which waits on the event the function sets): called
    first, that thread then ends; after concurrent.futures' exit function, it would wait 5 s."""
    code = (
        "import threading\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from nestegg_core.serve._threading import before_threads_are_joined\n"
        "done = threading.Event()\n"
        "ThreadPoolExecutor(1).submit(lambda: print('joined', done.wait(5), flush=True))\n"
        "assert before_threads_are_joined(lambda: print('first', flush=True) or done.set())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (0, "first\njoined True\n"), (
        "threading._register_atexit no longer runs before concurrent.futures' exit (CPython "
        + sys.version.split()[0]
        + "): "
        + result.stdout
        + result.stderr
    )


@pytest.mark.parametrize("why", ["missing", "exiting"])
def test_the_fence_says_once_when_it_cannot_register(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, why: str
) -> None:
    monkeypatch.setattr(_threading, "_said", set())
    if why == "missing":
        monkeypatch.delattr(threading, "_register_atexit")
    else:

        def shutting_down(*_args: object) -> None:
            raise RuntimeError("can't register atexit after shutdown")

        monkeypatch.setattr(threading, "_register_atexit", shutting_down)
    with caplog.at_level(logging.WARNING, logger=_threading.__name__):
        assert not _threading.before_threads_are_joined(lambda: None)
        assert not _threading.before_threads_are_joined(lambda: None)
    [record] = caplog.records
    said = "has no threading._register_atexit" if why == "missing" else "the interpreter is exiting already"
    assert said in record.getMessage()
