"""`python -m edge_ocr`: the same entry point as the `edge-ocr` console script."""

from edge_ocr.cli import main

raise SystemExit(main())
