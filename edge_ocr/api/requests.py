"""Reading ``POST /api/ocr``: the image from a multipart form, a raw image body or JSON with
base64, and the ``det`` and ``rois`` options from the form, the JSON or the query string.
Every refusal is an ApiError (400/413/415/422)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from io import BytesIO
from typing import Any

import bottle

from edge_ocr.api.responses import ApiError, mb
from edge_ocr.config import REQUEST_FLAG_WORDS, read_regions
from edge_ocr.engine.types import Region
from edge_ocr.errors import ConfigError


def read_ocr_request(max_upload: int) -> tuple[bytes, bool, tuple[Region, ...]]:
    """The image bytes and options of POST /api/ocr; raises ApiError 400/413/415/422."""
    req = bottle.request
    kind = (req.content_type or "").split(";", 1)[0].strip().lower()
    is_json = kind == "application/json" or kind.endswith("+json")
    # The limit is on the image: base64 in JSON carries it in 4/3 the bytes.
    if req.content_length > (json_body_limit(max_upload) if is_json else max_upload):
        raise ApiError("upload_too_large", "upload over the %s limit" % mb(max_upload))
    is_raw = kind.startswith("image/") or kind == "application/octet-stream"
    if not (is_json or is_raw or kind == "multipart/form-data"):
        raise ApiError(
            "unsupported_media_type",
            "expected multipart/form-data with an 'image' file, an image/* body or application/json, got %s"
            % (kind or "no content type"),
        )
    body = _read_body()
    det_raw: Any = req.query.get("det")
    rois_raw: Any = req.query.get("rois")
    if is_json:
        image, det_raw, rois_raw = _json_image(body, det_raw, rois_raw)
        if len(image) > max_upload:
            raise ApiError("upload_too_large", "image over the %s limit" % mb(max_upload))
    elif is_raw:
        image = body
    else:
        image, det_raw, rois_raw = _multipart_image(req.environ, body, det_raw, rois_raw)
    if not image:
        raise ApiError("missing_image", "the image is empty")
    return image, _det_option(det_raw), _rois_option(rois_raw)

def json_body_limit(max_upload: int) -> int:
    """The largest JSON body taken for an image of at most ``max_upload`` bytes: its base64 (4/3)
    with room for line breaks every 64-76 columns, escaped slashes (``\\/``) and the other keys;
    the decoded image is then held to ``max_upload`` exactly."""
    return max_upload * 3 // 2 + (1 << 16)


def _read_body() -> bytes:
    """At most ``max_upload`` bytes of the request body (Content-Length was checked)."""
    length = bottle.request.content_length
    if length <= 0:
        return b""
    stream = bottle.request.environ["wsgi.input"]
    chunks: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _json_image(body: bytes, det: Any, rois: Any) -> tuple[bytes, Any, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ApiError("bad_json", "body is not valid JSON: %s" % exc) from exc
    if not isinstance(data, dict):
        raise ApiError("bad_json", 'expected a JSON object {"image": "<base64>", ...}')
    unknown = sorted(set(data) - {"image", "det", "rois"})
    if unknown:
        raise ApiError("invalid_option", "unknown key(s): %s" % ", ".join(unknown))
    encoded = data.get("image")
    if encoded is None or encoded == "":
        raise ApiError("missing_image", 'expected "image": base64 of the image file')
    if not isinstance(encoded, str):
        raise ApiError("bad_base64", '"image" must be a base64 string')
    if encoded.startswith("data:"):  # a data: URL as a browser's FileReader makes it
        encoded = encoded.partition(",")[2]
    try:
        image = base64.b64decode(re.sub(r"\s+", "", encoded), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("bad_base64", '"image" is not valid base64: %s' % exc) from exc
    return image, data.get("det", det), data.get("rois", rois)


class _InMemoryRequest(bottle.BaseRequest):
    """A request over a body we already read (and capped): multipart parts stay in memory
    instead of Bottle's temp files (SD cards wear)."""

    __slots__ = ()
    MEMFILE_MAX = 1 << 40


def _multipart_image(environ: dict[str, Any], body: bytes, det: Any, rois: Any) -> tuple[bytes, Any, Any]:
    environ["CONTENT_LENGTH"] = str(len(body))
    environ["bottle.request.body"] = BytesIO(body)
    try:
        form = _InMemoryRequest(environ).POST
        upload = form.get("image")
        det = form.get("det", det)
        rois = form.get("rois", rois)
    except bottle.MultipartError as exc:
        message = str(exc.body).removeprefix("MultipartError: ")
        raise ApiError("bad_multipart", "broken multipart body: %s" % message) from exc
    except UnicodeDecodeError as exc:  # a binary part sent without a filename
        raise ApiError("bad_multipart", "send the image as a file part (with a filename)") from exc
    if upload is None:
        raise ApiError("missing_image", "expected a multipart file field named 'image'")
    if isinstance(upload, bottle.FileUpload):
        try:
            return upload.file.read(), det, rois
        finally:
            upload.file.close()
    return str(upload).encode("utf-8"), det, rois


def _det_option(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in REQUEST_FLAG_WORDS:
        return REQUEST_FLAG_WORDS[value.strip().lower()]
    raise ApiError("invalid_option", "det: expected 0 or 1 (true/false), got %s" % _show(value))


def _rois_option(value: Any) -> tuple[Region, ...]:
    """Parse ``rois``: a list (or its JSON text) of ``{name, box: [x, y, w, h], allowed_chars}``,
    by the same rules as a camera's ``rois`` in the config."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise ApiError("invalid_rois", "rois: not valid JSON: %s" % exc) from exc
    try:
        return read_regions(value, "rois")
    except ConfigError as exc:
        raise ApiError("invalid_rois", str(exc)) from exc


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
