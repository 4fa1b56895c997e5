"""The waitress server a mirror runs on: how it sends what it answers."""

from __future__ import annotations

import hashlib
import inspect
import socket
import time
from importlib.metadata import version
from typing import Any

import pytest
import requests
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.task import ThreadedTaskDispatcher, WSGITask
from waitress.utilities import Error

from nestegg_core.serve import server
from nestegg_core.serve.pacing import PacedDispatcher
from nestegg_core.testing.pytest_plugin import PrivateIndex

from .conftest import MirrorFactory

waitress_version = version("waitress")


def _record_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes waitress reads from the files it sends, as they happen."""
    reads: list[int] = []
    original = ReadOnlyFileBasedBuffer.get

    def get(self: ReadOnlyFileBasedBuffer, numbytes: int = -1, skip: bool = False) -> Any:
        data = original(self, numbytes, skip)
        reads.append(len(data))
        return data

    monkeypatch.setattr(ReadOnlyFileBasedBuffer, "get", get)
    return reads


def test_a_file_is_sent_a_block_at_a_time(
    make_mirror: MirrorFactory,
    upstream: PrivateIndex,
    http: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [wheel] = upstream.add("big", "1.0", sdist=False, payload_size=3_000_000)
    mirror = make_mirror()
    url = f"{mirror.url}/files/big/{wheel.filename}"
    http.get(url).raise_for_status()  # cached: sent from disk from now on
    reads = _record_reads(monkeypatch)
    response = http.get(url)
    response.raise_for_status()
    assert hashlib.sha256(response.content).hexdigest() == wheel.sha256
    assert sum(reads) == len(response.content) > 8 * server.SEND_BLOCK
    # not in blocks of the socket's send buffer (4 MiB on Linux's loopback)
    assert max(reads) <= server.SEND_BLOCK


def test_the_server_paces_its_workers_and_marks_slow_clients_as_waits(make_mirror: MirrorFactory) -> None:
    mirror = make_mirror()
    waitress_server: Any = mirror._server
    assert isinstance(waitress_server.task_dispatcher, PacedDispatcher)
    assert waitress_server.channel_class.func is server._Channel
    # the method the channel wraps is waitress's own: a waitress that renamed it would leave a
    # slow client's wait undeclared (the watchdog would still let another task run)
    assert "_flush_outbufs_below_high_watermark" in vars(HTTPChannel)


# what nestegg_core.serve.server and nestegg_core.serve.pacing take from waitress beyond its public API: a
# waitress that renames or drops one of these must fail here, by name, not in production
WAITRESS_INTERNALS = [
    (HTTPChannel, "_flush_outbufs_below_high_watermark"),  # a slow client's wait, and its deadline
    (HTTPChannel, "_flush_exception"),
    (HTTPChannel, "_flush_some"),
    (HTTPChannel, "parser_class"),  # the gate and the refusals
    (HTTPChannel, "task_class"),
    (HTTPChannel, "received"),
    (HTTPChannel, "readable"),
    (HTTPChannel, "send_continue"),
    (HTTPChannel, "cancel"),
    (HTTPChannel, "check_client_disconnected"),  # what environ["waitress.client_disconnected"] calls
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
    (Error, "to_response"),
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
        for name in ("outbuf_lock", "requests_lock", "requests", "connected", "adj", "server", "addr"):
            assert hasattr(channel, name), f"waitress {waitress_version}: a channel has no {name!r}"
        assert hasattr(channel.outbuf_lock, "wait")
        assert hasattr(waitress_server.trigger, "pull_trigger")
        assert "thunk" in inspect.signature(waitress_server.trigger.pull_trigger).parameters
        parser = channel.request  # the request whose body has not come yet
        for name in ("command", "path", "query", "headers"):
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
