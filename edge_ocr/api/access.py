"""Who may call the API: the Bearer token, or in tokenless (loopback-only) mode the Host and
Origin checks against DNS rebinding and cross-site POSTs. Installed once as a Bottle plugin,
so no route can forget it; it is also the request boundary where an ApiError becomes JSON and
a crash a logged 500."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import bottle

from edge_ocr.api.responses import ERROR_STATUS, ApiError, error_response
from edge_ocr.config import is_loopback

log = logging.getLogger(__name__)


class AccessPlugin:
    """Installed once on the app, so no route can forget it: the token check (every route not
    marked ``public``), the Host/Origin checks of tokenless (loopback-only) mode, and the
    request boundary where ApiError becomes JSON and a crash becomes a logged 500."""

    name = "edge_ocr_access"
    api = 2

    def __init__(self, token: bytes | None) -> None:
        self._token = token

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        public = bool(route.config.get("public", False))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                if self._token is None:
                    _check_local_request()
                elif not public:
                    self._check_token()
                return callback(*args, **kwargs)
            except ApiError as exc:
                log.debug("http refused path=%s code=%s", bottle.request.path, exc.code)
                return error_response(ERROR_STATUS[exc.code], exc.code, exc.message, exc.headers)
            except bottle.HTTPResponse:
                raise
            except Exception:  # request boundary: one bad request never takes the server down
                log.exception("http handler failed method=%s path=%s", bottle.request.method, bottle.request.path)
                return error_response(500, "internal", "internal server error")

        return wrapper

    def _check_token(self) -> None:
        assert self._token is not None
        challenge = {"WWW-Authenticate": 'Bearer realm="edge-ocr"'}
        scheme, _, given = bottle.request.get_header("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError("unauthorized", "this endpoint needs 'Authorization: Bearer <token>'", challenge)
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token):
            raise ApiError("unauthorized", "invalid token", challenge)


def _check_local_request() -> None:
    """Tokenless mode serves loopback only: refuse a foreign Host (DNS rebinding) and a POST
    a browser sent for another origin (CSRF from a page the local user happens to visit): an
    Origin that is not this host, ``Origin: null`` (sandboxed frames, ``data:`` and ``file:``
    pages) and ``Sec-Fetch-Site`` other than same-origin or none. Clients that are not browsers
    send neither header."""
    host = bottle.request.get_header("Host", "")
    if host and not is_loopback(_split_host(host)):
        raise ApiError("forbidden_host", "Host %r is not this device's loopback address" % host[:100])
    if bottle.request.method != "POST":
        return
    origin = bottle.request.get_header("Origin")
    site = bottle.request.get_header("Sec-Fetch-Site")
    if (origin is not None and origin.split("://", 1)[-1] != host) or site in ("cross-site", "same-site"):
        raise ApiError("forbidden_origin", "cross-site request refused")


def _split_host(header: str) -> str:
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header
