"""edge-ocr: an OCR daemon for Raspberry Pi and other small Linux boxes."""

__version__ = "0.1.0"
