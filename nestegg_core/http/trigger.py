"""``POST /ci/trigger/<name>[?ref=REF]``: a git or hg hook queues CI runs of a source build."""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from packaging.utils import canonicalize_name

from nestegg_core.errors import AuthError, NotFound

from .answers import app_path
from .types import Environ, StartResponse

if TYPE_CHECKING:
    from nestegg_core.builds.ci import CIService


class TriggerHandler:
    """``POST /ci/trigger/<name>[?ref=REF]`` with ``Authorization: Bearer <ci_token>`` queues runs."""

    def __init__(self, service: CIService, token: str | None, *, public_url: str | None = None) -> None:
        self.service = service
        self.token = token
        #: the mirror's URL behind a front server: the runs' URLs are under its path
        self.public_url = public_url

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        parts = str(environ.get("PATH_INFO", "")).split("/")
        if len(parts) != 4 or parts[2] != "trigger" or not parts[3]:
            raise NotFound("no such path; trigger a CI run with POST /ci/trigger/<name>")
        _drain(environ)
        if self.token is None:
            raise AuthError("the CI trigger is off: set ci_token in the config")
        sent = _sent_token(environ)
        if sent is None:
            raise AuthError("send the CI token: 'Authorization: Bearer <ci_token>' or 'X-Nestegg-Token'")
        if not hmac.compare_digest(sent.encode(), self.token.encode()):
            raise AuthError("wrong CI token")
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        refs = query.get("ref")
        runs = self.service.trigger(parts[3], refs[-1] if refs else None)
        prefix = app_path(environ, self.public_url)
        body = json.dumps(
            {
                "project": runs[0].project if runs else canonicalize_name(parts[3]),
                "runs": [
                    {
                        "id": run.id,
                        "ref": run.ref,
                        "outcome": run.outcome,
                        "url": f"{prefix}/ui/ci/{run.project}/{run.id}",
                    }
                    for run in runs
                ],
            }
        ).encode()
        start_response(
            "202 Accepted",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


def _sent_token(environ: Environ) -> str | None:
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = str(environ.get("HTTP_X_NESTEGG_TOKEN", "")).strip()
    return token or None


def _drain(environ: Environ, limit: int = 64 * 1024) -> None:
    """Read (and ignore) a small request body, so that keep-alive connections stay in step."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if 0 < length <= limit:
        with contextlib.suppress(OSError):
            environ["wsgi.input"].read(length)
