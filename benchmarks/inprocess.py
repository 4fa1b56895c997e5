"""Start-up of nestegg in-process, timed inside a fresh interpreter (run by ``run.py``)::

    python benchmarks/inprocess.py CACHE_DIR UPSTREAM_INDEX_URL PROJECT

Prints JSON: ``import`` (seconds to import nestegg_core) and ``start`` (seconds from building a
``Mirror`` to the first 200 on PROJECT's page, the page fetched from the upstream on the way).
"""

from __future__ import annotations

import time

started = time.perf_counter()

import http.client  # noqa: E402 - imported after the clock starts on purpose
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from nestegg_core import Config, Mirror  # noqa: E402

imported = time.perf_counter()


def main(argv: list[str]) -> int:
    cache, upstream, project = argv
    begin = time.perf_counter()
    mirror = Mirror(Config(nestegg_dir=Path(cache), port=0, index_url=upstream)).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=30)
        connection.request(
            "GET", f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        response = connection.getresponse()
        response.read()
        status = response.status
        ready = time.perf_counter()
        connection.close()
    finally:
        mirror.stop()
    print(json.dumps({"import": imported - started, "start": ready - begin, "status": status}))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
