"""models/rewrites.py: a stem's Concat -> Conv computed as summed convolutions, the same function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="models/ needs onnx (the dev extra)")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.helpers import models_build  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture
def rewrites(monkeypatch):
    monkeypatch.syspath_prepend(str(MODELS))
    import rewrites

    return rewrites


def stem(concat_axis: int = 1, extra_consumer: bool = False) -> onnx.ModelProto:
    """PP-OCRv6's detector stem in small: conv -> (max-pool | conv) -> concat -> 3x3/2 conv -> relu."""
    rng = np.random.default_rng(0)

    def weights(name: str, shape: tuple[int, ...]) -> TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="Conv.0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="Relu.0"),
        helper.make_node("MaxPool", ["r0"], ["pool"], name="MaxPool.0", kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="Conv.1", kernel_shape=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="Relu.1"),
        helper.make_node("Concat", ["pool", "r1"], ["joined"], name="Concat.0", axis=concat_axis),
        helper.make_node("Conv", ["joined", "w3", "b3"], ["c3"], name="Conv.3", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["y"], name="Relu.3"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 16, 20])]
    if extra_consumer:
        nodes.append(helper.make_node("Identity", ["joined"], ["also"], name="Identity.0"))
        outputs.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, [1, 14, 32, 40]))
    graph = helper.make_graph(
        nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 33, 41])], outputs,
        [weights("w0", (8, 3, 3, 3)), weights("b0", (8,)), weights("w1", (6, 8, 2, 2)),
         weights("w3", (5, 14, 3, 3)), weights("b3", (5,))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_a_concat_into_a_conv_becomes_summed_convolutions_with_the_same_output(rewrites):
    model = stem()
    x = np.random.default_rng(1).normal(size=(1, 3, 33, 41)).astype(np.float32)
    before = run(model, x)
    rewrites.split_concat_conv(model, "Concat.0")
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "Concat" not in ops and ops.count("Conv") == 4 and ops.count("Add") == 1
    assert "w3" not in {i.name for i in model.graph.initializer}  # the joined weights are not kept besides
    np.testing.assert_allclose(run(model, x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("concat_axis, extra_consumer, message", [
    (2, False, "not a channel Concat"),
    (1, True, "not a channel Concat feeding one Conv"),
])
def test_a_concat_it_cannot_split_is_refused(rewrites, concat_axis, extra_consumer, message):
    with pytest.raises(ValueError, match=message):
        rewrites.split_concat_conv(stem(concat_axis, extra_consumer), "Concat.0")
    with pytest.raises(ValueError, match="no Concat node"):
        rewrites.split_concat_conv(stem(), "Concat.9")


def test_the_shipped_int8_detector_has_its_stem_join_split():
    model = onnx.load(str(MODELS / "ppocrv6-small" / "det.int8.onnx"))
    names = {n.name for n in model.graph.node}
    assert "Concat.0" not in names and {"Conv.3.0", "Conv.3.1", "Conv.3.sum.1"} <= names


def test_a_recipe_splits_only_concats_it_keeps_fp32_in_a_static_model(monkeypatch):
    build = models_build(monkeypatch)
    detector = next(p for p in build.PACKS if p.name == "ppocrv6-small").det.int8
    assert detector.split_concats == ("Concat.0",) and "Concat.0" in detector.exclude_nodes
    with pytest.raises(ValueError, match="split_concats"):
        build.Int8Recipe("dynamic", "x", exclude_nodes=("Concat.0",), split_concats=("Concat.0",))
    with pytest.raises(ValueError, match="kept fp32"):
        build.Int8Recipe("static", "x", split_concats=("Concat.0",))  # a quantized Concat has no fp32 Conv after it
