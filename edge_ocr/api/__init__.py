"""The local HTTP API of SPEC "HTTP": ``make_app()`` builds the Bottle app, ``HttpServer`` runs it.

The daemon's side comes in through one typed seam, ``ApiBackend``, so this package never sees
the engine, the pipeline or the app. Modules: ``routes`` (the endpoints), ``requests`` (reading
an OCR request), ``access`` (token, Host and Origin checks), ``responses`` (the JSON and error
format), ``server`` (waitress), ``backend`` (the seam).

Every error is JSON ``{"error": {"code", "message"}}``; ``ERROR_STATUS`` maps each code to
its HTTP status (Bottle's and waitress's own error pages are replaced too):

    400 bad_multipart bad_json bad_base64 missing_image bad_request
    401 unauthorized (missing or wrong ``Authorization: Bearer``)
    403 forbidden_host (DNS rebinding) forbidden_origin (cross-site POST), tokenless mode only
    404 not_found unknown_source no_result          405 method_not_allowed
    413 upload_too_large                            415 unsupported_media_type unsupported_image
    422 image_too_large invalid_rois invalid_option 503 busy not_ready capture_failed
    500 internal (also a result whose error is not an ImageError)
"""

from edge_ocr.api.backend import ApiBackend
from edge_ocr.api.responses import ERROR_STATUS
from edge_ocr.api.routes import make_app
from edge_ocr.api.server import HttpServer

__all__ = ["ERROR_STATUS", "ApiBackend", "HttpServer", "make_app"]
