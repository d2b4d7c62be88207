"""The CLI's measuring tools: `edge-ocr bench`, `eval` and `tune`, and the accuracy scorer.

The daemon never imports them (tests/test_layers.py checks): a device runs only what serves it.
"""
