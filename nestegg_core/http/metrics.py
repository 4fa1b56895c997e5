"""``/metrics``: the nest's counters as JSON, or in Prometheus' text format."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from nestegg_core.storage.counters import COUNTERS, Counters

from .types import Environ, StartResponse

_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def answer(environ: Environ, start_response: StartResponse, counters: Counters) -> Iterable[bytes]:
    """``/metrics``: JSON, or Prometheus' text format for ``?format=prometheus`` or a scraper."""
    totals = counters.totals()
    accept = environ.get("HTTP_ACCEPT", "")
    query = environ.get("QUERY_STRING", "")
    if "format=prometheus" in query.split("&") or "text/plain" in accept or "openmetrics" in accept:
        body, media = prometheus_text(totals).encode(), _PROMETHEUS
    else:
        body, media = json.dumps({**totals, "pid": os.getpid()}).encode(), "application/json"
    start_response(
        "200 OK", [("Content-Type", media), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def prometheus_text(totals: dict[str, Any]) -> str:
    """The counters in the Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for name, description in COUNTERS.items():
        metric = f"nestegg_{name}_total"
        lines += [f"# HELP {metric} {description}", f"# TYPE {metric} counter", f"{metric} {totals[name]}"]
    lines += [
        "# HELP nestegg_metrics_since_seconds When the counters of this cache started (Unix time).",
        "# TYPE nestegg_metrics_since_seconds gauge",
        f"nestegg_metrics_since_seconds {totals['since']:.3f}",
    ]
    return "\n".join(lines) + "\n"
