"""A bounded soak: mixed concurrent load on a mirror whose upstream flaps, then every byte checked.

::

    python benchmarks/soak.py [--seconds 60] [--clients 16] [--flap 3] [--timeout 1]

What it does, all on 127.0.0.1 and in a temporary directory (``--dir`` to keep it):

1. Generates a fake upstream index (``--projects`` projects, two versions each, wheels and sdists
   of 5 kB to 1.5 MB) served by nestegg's own private index, behind a TCP proxy.
2. Starts a mirror of it (in this process, ``ttl`` of 2 s so that pages revalidate all the time,
   upstream timeout ``--timeout``), and ``--clients`` threads that for ``--seconds`` ask for project
   pages (HTML and JSON, some of unknown projects), whole files, byte ranges, HEADs and PEP 658
   metadata, at random.
3. Meanwhile the upstream flaps every ``--flap`` seconds between healthy and each fault in turn:
   every answer 503, slow answers (0 to 3 times the timeout), refused connections (the proxy stops
   listening), and files with a flipped byte (which the mirror must refuse to cache). New releases
   appear upstream and cached files are pruned as it runs, so that downloads never stop.
4. Then checks: every whole file and metadata body a client got against the upstream's sha256, every
   range against the bytes of the file, every file in the cache against its record and against the
   upstream, and that nothing partial is left; and prints the figures.

Exit status 1 if any response carried wrong bytes, any answer was a 500, or the cache holds a
file that does not verify; a client seeing a 502/504 or a broken-off body during a fault is
expected and counted, not a failure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import http.client
import json
import logging
import random
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import NormalizedName

from nestegg_core import Config, Mirror
from nestegg_core.simple.distmeta import wheel_metadata
from nestegg_core.testing.dists import PackageSpec, make_sdist, make_wheel
from nestegg_core.testing.pytest_plugin import PrivateIndex

JSON = "application/vnd.pypi.simple.v1+json"
MODES = ("healthy", "503", "slow", "refused", "corrupt")


@dataclass
class Upstream:
    """What the fake upstream holds: bytes and hashes of every file, metadata of every wheel."""

    index: PrivateIndex
    dists: Path
    files: dict[str, bytes] = field(default_factory=dict)  # "<project>/<filename>" -> bytes
    metadata: dict[str, bytes] = field(default_factory=dict)
    projects: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.files[key]).hexdigest()

    def publish(self, name: str, version: str, payload_size: int) -> None:
        spec = PackageSpec(name=name, version=version, payload_size=payload_size)
        for path in (make_wheel(spec, self.dists), make_sdist(spec, self.dists)):
            key = f"{name}/{path.name}"
            data = path.read_bytes()
            metadata = wheel_metadata(path) if path.name.endswith(".whl") else None
            self.index.publish(path)
            path.unlink()
            with self.lock:
                self.files[key] = data
                if metadata is not None:
                    self.metadata[key] = metadata
                self.projects.setdefault(name, []).append(path.name)

    def pick(self, rng: random.Random) -> tuple[str, str]:
        with self.lock:
            name = rng.choice(sorted(self.projects))
            return name, rng.choice(self.projects[name])


class Flapper:
    """WSGI middleware in front of the upstream: answers per the current mode, and counts."""

    def __init__(self, timeout: float, rng: random.Random) -> None:
        self.mode = "healthy"
        self.timeout = timeout
        self.rng = rng
        self.injected: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def count(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] += 1

    def __call__(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            mode = self.mode
            if mode == "503":
                self.count("503 answers")
                start_response("503 Flapping", [("Content-Type", "text/plain"), ("Content-Length", "9")])
                return [b"flapping\n"]
            if mode == "slow":
                self.count("slow answers")
                time.sleep(self.rng.uniform(0, 3 * self.timeout))
            result = app(environ, start_response)
            path = environ.get("PATH_INFO", "")
            if mode == "corrupt" and path.startswith("/files/") and environ["REQUEST_METHOD"] == "GET":
                body = b"".join(result)
                with contextlib.suppress(Exception):
                    result.close()  # type: ignore[attr-defined]
                if body:
                    self.count("corrupted files")
                    i = self.rng.randrange(len(body))
                    body = body[:i] + bytes([body[i] ^ 0x55]) + body[i + 1 :]
                return [body]
            return result

        return wrapped


class FlapProxy:
    """A TCP proxy to the upstream that can stop listening (refused) and listen again, same port."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = self._listen(0)
        self.port: int = self.listener.getsockname()[1]
        self.refusing = False
        self.refusals = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="flap-proxy")
        self._thread.start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        return sock

    def refuse(self, refusing: bool) -> None:
        with self._lock:
            if refusing == self.refusing:
                return
            self.refusing = refusing
            if refusing:
                self.refusals += 1
                self.listener.close()  # connections are now refused by the kernel
            else:
                for _ in range(50):  # our own port again; SO_REUSEADDR lets it come back at once
                    try:
                        self.listener = self._listen(self.port)
                        break
                    except OSError:
                        time.sleep(0.1)
                else:
                    raise RuntimeError(f"cannot listen on port {self.port} again")

    def _accept(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                listener, refusing = self.listener, self.refusing
            if refusing:
                time.sleep(0.05)
                continue
            listener.settimeout(0.2)
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._pipe_both, args=(client,), daemon=True).start()

    def _pipe_both(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.target), timeout=30)
        except OSError:
            client.close()
            return
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.listener.close()
        self._thread.join(5)


class LogCounter(logging.Handler):
    """Counts the server's log records by level and logger (the records go to ``soak.log``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname.lower()} {record.name}"] += 1


@dataclass
class Tally:
    """What the clients saw."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    verified: collections.Counter[str] = field(default_factory=collections.Counter)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, op: str, outcome: str) -> None:
        with self.lock:
            self.requests[op] += 1
            self.outcomes[outcome] += 1

    def check(self, kind: str, ok: bool, what: str) -> None:
        with self.lock:
            if ok:
                self.verified[kind] += 1
            else:
                self.wrong.append(what)


def make_upstream(root: Path, projects: int, rng: random.Random) -> tuple[Upstream, Flapper]:
    flapper = Flapper(timeout=1.0, rng=rng)
    known = Upstream(index=PrivateIndex(root / "upstream", middleware=flapper), dists=root / "dists")
    for i in range(projects):
        for version in ("1.0", "2.0"):
            known.publish(f"soak-{i}", version, rng.choice([5_000, 60_000, 400_000, 1_500_000]))
    known.index.start()
    return known, flapper


def churn(mirror: Mirror, known: Upstream, deadline: float, rng: random.Random) -> collections.Counter[str]:
    """Keep downloads happening: new releases upstream, and cached files pruned as upkeep would."""
    done: collections.Counter[str] = collections.Counter()
    store = mirror.repository.store
    version = 3
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if rng.random() < 0.3:
            known.publish(
                f"soak-{rng.randrange(len(known.projects))}", f"{version}.0", rng.choice([5_000, 150_000])
            )
            version += 1
            done["releases published"] += 1
        project, filename = known.pick(rng)
        name = NormalizedName(project)
        with contextlib.suppress(Exception), store.lock(name, filename, timeout=0):
            # the record first, as upkeep prunes: a file without one is no longer kept
            for path in (
                store.record_path(name, filename),
                store.file_path(name, filename),
                store.metadata_path(name, filename),
            ):
                path.unlink(missing_ok=True)
            done["cached files pruned"] += 1
    return done


def request(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def client(port: int, known: Upstream, tally: Tally, deadline: float, rng: random.Random) -> None:
    while time.monotonic() < deadline:
        name, filename = known.pick(rng)
        key = f"{name}/{filename}"
        full = known.files[key]
        op = rng.choices(
            ["page-html", "page-json", "page-unknown", "file", "range", "head", "metadata"],
            weights=[2, 3, 1, 4, 3, 1, 2],
        )[0]
        headers: dict[str, str] = {}
        method, path = "GET", f"/files/{name}/{filename}"
        if op == "page-html":
            path = f"/simple/{name}/"
        elif op == "page-json":
            path, headers = f"/simple/{name}/", {"Accept": JSON}
        elif op == "page-unknown":
            path = f"/simple/no-such-{rng.randrange(10)}/"
        elif op == "range":
            start = rng.randrange(len(full))
            end = min(len(full) - 1, start + rng.randrange(1, 200_000))
            headers = {"Range": rng.choice([f"bytes={start}-{end}", f"bytes=-{end - start + 1}"])}
        elif op == "head":
            method = "HEAD"
        elif op == "metadata":
            if not filename.endswith(".whl"):
                op, path = "page-json", f"/simple/{name}/"
                headers = {"Accept": JSON}
            else:
                path += ".metadata"
        try:
            status, response_headers, body = request(port, method, path, headers)
        except TimeoutError:
            tally.note(op, "client timeout")
            continue
        except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException, OSError):
            tally.note(op, "broken off")
            continue
        tally.note(op, str(status))
        if status == 500:
            tally.check("no 500", False, f"500 for {method} {path}: {body[:200]!r}")
        if op == "file" and status == 200:
            tally.check("file bodies", hashlib.sha256(body).digest() == hashlib.sha256(full).digest(), path)
        elif op == "range" and status == 206:
            first, last = (
                int(x) for x in response_headers["content-range"].split()[1].split("/")[0].split("-")
            )
            tally.check("range bodies", body == full[first : last + 1], f"{path} {headers}")
        elif op == "range" and status == 200:
            tally.check("file bodies", body == full, f"{path} {headers}")
        elif op == "metadata" and status == 200:
            tally.check("metadata bodies", body == known.metadata[key], path)
        elif op.startswith("page-json") and status == 200:
            listed = {f["filename"]: f["hashes"].get("sha256") for f in json.loads(body)["files"]}
            ok = all(known.sha256(f"{name}/{f}") == digest for f, digest in listed.items() if digest)
            tally.check("page hashes", ok, path)


def flap(
    flapper: Flapper, proxy: FlapProxy, period: float, deadline: float, rng: random.Random
) -> collections.Counter[str]:
    phases: collections.Counter[str] = collections.Counter()
    faults = list(MODES[1:])
    rng.shuffle(faults)
    while time.monotonic() < deadline:
        # healthy, then each fault in turn (in a random order), healthy again, ...
        turn = phases.total()
        mode = "healthy" if turn % 2 == 0 else faults[(turn // 2) % len(faults)]
        phases[mode] += 1
        proxy.refuse(mode == "refused")
        flapper.mode = "healthy" if mode == "refused" else mode
        time.sleep(min(period, max(0.0, deadline - time.monotonic())))
    proxy.refuse(False)
    flapper.mode = "healthy"
    return phases


def verify_cache(mirror: Mirror, known: Upstream) -> tuple[int, list[str]]:
    """Every cached file against its record and the upstream; returns (verified, problems)."""
    store = mirror.repository.store
    verified, problems = 0, []
    for folder in sorted(store.files.iterdir()) if store.files.is_dir() else []:
        for path in sorted(folder.iterdir()):
            key = f"{folder.name}/{path.name}"
            if path.name.endswith(".part") or (path.name.startswith(".") and not path.name.endswith(".tmp")):
                problems.append(f"left over: {key}")
                continue
            if path.name.endswith((".json", ".tmp", ".metadata.checked")):  # records, notes of checks
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if path.name.endswith(".metadata"):
                expected = known.metadata.get(key[: -len(".metadata")])
                ok = expected is not None and path.read_bytes() == expected
            else:
                record = json.loads((folder / f"{path.name}.json").read_text())
                ok = (
                    digest == record["hashes"]["sha256"] == known.sha256(key)
                    and record["size"] == path.stat().st_size
                )
            if ok:
                verified += 1
            else:
                problems.append(f"does not verify: {key}")
    return verified, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs (default 60)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--flap", type=float, default=3.0, help="seconds per upstream phase (default 3)")
    parser.add_argument("--projects", type=int, default=6, help="projects on the upstream (default 6)")
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="the mirror's upstream timeout (default 1)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--dir", help="work in this directory and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    # load generation, not cryptography: reproducible from the printed seed
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)  # noqa: S311
    rng = random.Random(seed)  # noqa: S311
    with contextlib.ExitStack() as stack:
        # late writers (a request thread still finishing) must not fail the cleanup
        scratch = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        root = Path(args.dir) if args.dir else Path(stack.enter_context(scratch))
        root.mkdir(parents=True, exist_ok=True)
        print(
            f"soak: seed {seed}, {args.seconds:g}s, {args.clients} clients, every {args.flap:g}s a new phase"
        )
        print(f"  in {root}")
        logging.basicConfig(
            filename=root / "soak.log",
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        counter = LogCounter()
        logging.getLogger().addHandler(counter)
        known, flapper = make_upstream(root, args.projects, rng)
        stack.callback(known.index.stop)
        flapper.timeout = args.timeout
        proxy = FlapProxy(known.index.mirror.port)
        stack.callback(proxy.close)
        config = Config(
            nestegg_dir=root / "nest",
            port=0,
            index_url=f"http://127.0.0.1:{proxy.port}/simple/",
            ttl=2.0,
            timeout=args.timeout,
        )
        mirror = Mirror(config).start()
        stack.callback(mirror.stop)
        tally = Tally()
        started = time.monotonic()
        deadline = started + args.seconds
        seeds = [rng.randrange(1 << 30) for _ in range(args.clients)]
        threads = [
            threading.Thread(
                target=client,
                args=(mirror.port, known, tally, deadline, random.Random(s)),  # noqa: S311
                daemon=True,
            )
            for s in seeds
        ]
        for thread in threads:
            thread.start()
        churned: collections.Counter[str] = collections.Counter()
        churner = threading.Thread(
            target=lambda: churned.update(churn(mirror, known, deadline, random.Random(seed))),  # noqa: S311
            daemon=True,
        )
        churner.start()
        phases = flap(flapper, proxy, args.flap, deadline, rng)
        churner.join(60)
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - started
        # let downloads that were still running finish against the healthy upstream
        settle = time.monotonic() + 60
        while mirror.repository.downloads._running and time.monotonic() < settle:
            time.sleep(0.1)
        mirror.stop()
        cached, problems = verify_cache(mirror, known)
        report(
            tally=tally,
            phases=phases,
            flapper=flapper,
            proxy=proxy,
            cached=cached,
            problems=problems,
            elapsed=elapsed,
        )
        print("churn: " + ", ".join(f"{k} {v}" for k, v in sorted(churned.items())))
        print("server log: " + (", ".join(f"{k} {v}" for k, v in sorted(counter.counts.items())) or "quiet"))
        return 1 if tally.wrong or problems else 0


def report(
    *,
    tally: Tally,
    phases: collections.Counter[str],
    flapper: Flapper,
    proxy: FlapProxy,
    cached: int,
    problems: list[str],
    elapsed: float,
) -> None:
    total = tally.requests.total()
    print(f"requests: {total} in {elapsed:.1f}s ({total / elapsed:.0f}/s)")
    print("  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.requests.items())))
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.outcomes.items())))
    errors = {k: v for k, v in tally.outcomes.items() if k not in ("200", "206", "404")}
    print(
        f"errors: {sum(errors.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) + ")"
    )
    print("faults: phases " + ", ".join(f"{k} {v}" for k, v in sorted(phases.items())))
    injected = dict(flapper.injected, **{"refused periods": proxy.refusals})
    print("  injected: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
    print("verified responses: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.verified.items())))
    print(f"verified cache files: {cached} (files and metadata, against record and upstream)")
    print(f"wrong bytes or 500s: {len(tally.wrong)}; cache problems: {len(problems)}")
    for line in (tally.wrong + problems)[:20]:
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
