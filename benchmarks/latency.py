"""A CONNECT proxy on loopback that puts the upstream farther away, for the "distant" rows.

Run as a separate process, as the servers are::

    python benchmarks/latency.py --port PORT --rtt-ms 20

Every byte it relays, either way, is held for half of ``--rtt-ms`` before it is passed on, so each
exchange through it (a TCP connect, a TLS handshake's round trips, a request and its answer) takes
that much longer, as across a link that long. Bytes are held, never paced: the bandwidth stays the
machine's. Only ``CONNECT`` is served (an HTTPS upstream, through ``HTTPS_PROXY``); it listens on
127.0.0.1 and relays until it gets SIGTERM.

The installers and servers measured through it all pay the same added round trips; what it does not
add is the upstream's own time, which a nearer or farther upstream keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

#: the most bytes read at once from either side
CHUNK = 64 * 1024
#: the longest request head a client may send (a CONNECT line and a few fields)
MAX_HEAD = 8 * 1024


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Pass what ``reader`` gives to ``writer``, each piece ``delay`` seconds after it came, in
    order; the end (EOF) too."""
    loop = asyncio.get_running_loop()
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def take() -> None:
        while True:
            data = await reader.read(CHUNK)
            held.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def give() -> None:
        while True:
            due, data = await held.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    with contextlib.suppress(ConnectionError, OSError):
        await asyncio.gather(take(), give())


async def _serve(client: tuple[asyncio.StreamReader, asyncio.StreamWriter], delay: float) -> None:
    reader, writer = client
    upstream: asyncio.StreamWriter | None = None
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head[: head.index(b"\r\n")].decode("latin-1").split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not host or not port.isdigit():
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        await asyncio.sleep(delay)  # the connect's round trip: the SYN out, its answer back
        try:
            far_reader, upstream = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_relay(reader, upstream, delay), _relay(far_reader, writer, delay))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError, OSError):
        pass  # a client gone or not speaking CONNECT: its connection is closed
    finally:
        for stream in (writer, upstream):
            if stream is not None:
                stream.close()


async def _main(port: int, rtt_ms: float) -> None:
    delay = rtt_ms / 2000
    server = await asyncio.start_server(lambda r, w: _serve((r, w), delay), "127.0.0.1", port, limit=MAX_HEAD)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="the loopback port to listen on")
    parser.add_argument("--rtt-ms", type=float, required=True, help="the round trip to add, in milliseconds")
    args = parser.parse_args()
    asyncio.run(_main(args.port, args.rtt_ms))


if __name__ == "__main__":
    main()
