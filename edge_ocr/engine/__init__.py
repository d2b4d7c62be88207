"""OCR core, usable without the daemon: image bytes in, text lines with boxes out.

Importing this package loads nothing heavy; ``engine.ocr`` and ``engine.models`` pull in
ONNX Runtime, the other stages only numpy and OpenCV.
"""
