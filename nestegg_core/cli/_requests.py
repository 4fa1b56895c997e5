"""requests imported without a character detector, in a process of nestegg's own (the CLI's).

requests imports charset_normalizer (or chardet) with itself, for ``Response.text`` of a body that
names no charset. nestegg reads no body that way (pages are parsed from bytes), and the detector
cost the server 2.7 MB of memory and 7 ms of its start. Without one, requests warns once and takes
such bodies as UTF-8: its behaviour since 2.26, when chardet became optional, and the fence here:
``tests/test_cli.py`` fails, naming it, if requests stops accepting a process without a detector.
A library must not choose this for another program's requests, hence the CLI only, before
anything has imported requests.
"""

from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["import_without_detector"]

_DETECTORS = ("charset_normalizer", "chardet")


def import_without_detector() -> None:
    """Import requests with no character detector, unless it is imported already (a test's
    process, a program that runs the CLI's ``main``): then it stays as it is."""
    if "requests" in sys.modules:
        return
    blocked = [name for name in _DETECTORS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it fails
    # for good: a catch_warnings() around the import would drop the filters urllib3 and requests add
    warnings.filterwarnings(
        "ignore", message="Unable to find acceptable character detection", module="requests"
    )
    try:
        importlib.import_module("requests")
    finally:
        for name in blocked:  # whatever else this process imports later finds them as usual
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
