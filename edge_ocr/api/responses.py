"""Every answer of the API: JSON bodies, the error format ``{"error": {"code", "message"}}`` and
``ERROR_STATUS``, which maps each error code to its HTTP status, and ``ApiError``, which a
handler raises to answer with one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import bottle

ERROR_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "bad_request": 400,
        "bad_multipart": 400,
        "bad_json": 400,
        "bad_base64": 400,
        "missing_image": 400,
        "unauthorized": 401,
        "forbidden_host": 403,
        "forbidden_origin": 403,
        "not_found": 404,
        "unknown_source": 404,
        "no_result": 404,
        "method_not_allowed": 405,
        "upload_too_large": 413,
        "unsupported_media_type": 415,
        "unsupported_image": 415,
        "image_too_large": 422,
        "invalid_rois": 422,
        "invalid_option": 422,
        "image": 422,  # an ImageError without a more specific subclass
        "internal": 500,
        "busy": 503,
        "not_ready": 503,
        "capture_failed": 503,
    }
)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"  # Windows PowerShell 5.1 reads it as Latin-1 without
COMMON_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


class ApiError(Exception):
    """Raised inside a handler: becomes a JSON error response with the status of ``code``."""

    def __init__(self, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def response(status: int, body: str | bytes, headers: Mapping[str, str]) -> bottle.HTTPResponse:
    all_headers = dict(COMMON_HEADERS)
    all_headers.update(headers)
    return bottle.HTTPResponse(body=body, status=status, headers=all_headers)


def json_response(status: int, data: Mapping[str, Any]) -> bottle.HTTPResponse:
    # default=str: paths and enums in the injected mappings serialise as their text
    return response(status, json.dumps(data, default=str, separators=(",", ":")), {"Content-Type": JSON_CONTENT_TYPE})


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return response(status, body, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


def mb(n: int) -> str:
    return "%g MB" % round(n / (1024 * 1024), 2)
