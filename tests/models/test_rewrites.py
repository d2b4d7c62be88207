"""models/: graph rewrites that keep the function (rewrites.py), the build's 7-bit splice and saturating_convs.py."""

from __future__ import annotations

import sys
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
    # A static-rec recipe quantizes its op_types alone: a Concat stays fp32 unless it is one of them.
    page_reader = next(p for p in build.PACKS if p.name == "ppocrv6-small").rec_page.int8
    assert page_reader.split_concats == ("Concat.0",) and "Concat" not in page_reader.op_types
    with pytest.raises(ValueError, match="kept fp32"):
        build.Int8Recipe("static-rec", "x", op_types=("Conv", "Concat"), split_concats=("Concat.0",))


def lcnet_blocks(opset: int = 14) -> onnx.ModelProto:
    """Two of PP-OCRv4's backbone blocks in small, as paddle2onnx writes them: each convolution is
    followed by a scalar affine, a HardSwish in four element-wise ops and another scalar affine."""
    rng = np.random.default_rng(2)
    initializers = []

    def constant(name: str, value) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    nodes: list[onnx.NodeProto] = []

    def activation(x: str, tag: str) -> str:
        """x * s + b -> HardSwish as x * Clip(x + 3, 0, 6) / 6 -> * s + b."""
        steps = [
            ("Mul", [constant(f"s.{tag}", [rng.uniform(0.5, 1.5)]), x], f"{tag}.scaled"),
            ("Add", [f"{tag}.scaled", constant(f"b.{tag}", [rng.uniform(-1, 1)])], f"{tag}.affine"),
            ("Add", [f"{tag}.affine", constant(f"three.{tag}", 3.0)], f"{tag}.plus3"),
            ("Clip", [f"{tag}.plus3", constant(f"zero.{tag}", 0.0), constant(f"six.{tag}", 6.0)], f"{tag}.clip"),
            ("Mul", [f"{tag}.affine", f"{tag}.clip"], f"{tag}.product"),
            ("Div", [f"{tag}.product", constant(f"sixth.{tag}", 6.0)], f"{tag}.hswish"),
            ("Mul", [constant(f"s2.{tag}", [rng.uniform(0.5, 1.5)]), f"{tag}.hswish"], f"{tag}.scaled2"),
            ("Add", [f"{tag}.scaled2", constant(f"b2.{tag}", [rng.uniform(-1, 1)])], f"{tag}.out"),
        ]
        nodes.extend(helper.make_node(op, inputs, [out], name=out) for op, inputs, out in steps)
        return f"{tag}.out"

    def conv(x: str, name: str, shape: tuple[int, ...], **attributes) -> str:
        nodes.append(helper.make_node("Conv", [x, constant(f"{name}.w", rng.normal(0, 0.3, shape)),
                                               constant(f"{name}.b", rng.normal(0, 0.1, shape[0]))],
                                      [f"{name}.y"], name=name, **attributes))
        return f"{name}.y"

    y = activation(conv("x", "dw.0", (4, 1, 3, 3), group=4, pads=[1, 1, 1, 1]), "a0")
    y = activation(conv(y, "pw.0", (8, 4, 1, 1)), "a1")
    y = activation(conv(y, "dw.1", (8, 1, 3, 3), group=8, pads=[1, 1, 1, 1]), "a2")
    nodes.append(helper.make_node("Identity", [y], ["y"], name="out"))
    graph = helper.make_graph(
        nodes, "lcnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 20])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_hardswish_chains_and_scalar_affines_fold_into_fewer_ops_with_the_same_output(rewrites):
    model = lcnet_blocks()
    x = np.random.default_rng(3).normal(size=(1, 4, 6, 20)).astype(np.float32)
    before = run(model, x)
    assert rewrites.fuse_hardswish(model) == 3
    # Each convolution takes the affine after it, and pw.0 (1x1, unpadded) a0's second one too; a1's
    # second stays before the padded dw.1, a2's before the graph's output.
    assert rewrites.fold_scalar_affines(model) == 4
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("HardSwish") == 3 and "Clip" not in ops and "Div" not in ops
    assert ops.count("Mul") == 2 and ops.count("Add") == 2  # a1's and a2's second affines
    np.testing.assert_allclose(run(model, x), before, rtol=1e-5, atol=1e-5)


def test_into_a_convolution_to_be_quantized_only_the_scale_folds(rewrites):
    model = lcnet_blocks()
    x = np.random.default_rng(4).normal(size=(1, 4, 6, 20)).astype(np.float32)
    before = run(model, x)
    rewrites.fuse_hardswish(model)
    rewrites.fold_scalar_affines(model, quantized={"pw.0"})
    pointwise = next(n for n in model.graph.node if n.name == "pw.0")
    consumers = [n for n in model.graph.node if pointwise.output[0] in n.input]
    assert [n.op_type for n in consumers] == ["Add"]  # the shift stays: a uint8 range must hold 0
    np.testing.assert_allclose(run(model, x), before, rtol=1e-5, atol=1e-5)


def test_hardswish_needs_opset_14(rewrites):
    with pytest.raises(ValueError, match="opset 14"):
        rewrites.fuse_hardswish(lcnet_blocks(opset=13))


def test_the_shipped_plate_specialist_has_its_activations_fused():
    ops = [n.op_type for n in onnx.load(str(MODELS / "ppocrv6-small" / "rec_zh.int8.onnx")).graph.node]
    assert ops.count("HardSwish") == 28 and "Clip" not in ops  # the Divs left are the neck's layer norms


def test_a_recipe_folds_affines_only_when_it_calibrates_on_crops(monkeypatch):
    build = models_build(monkeypatch)
    assert next(p for p in build.PACKS if p.name == "ppocrv6-small").rec_zh.int8.fold_affines
    with pytest.raises(ValueError, match="fold_affines"):
        build.Int8Recipe("static", "x", fold_affines=True)


def attention(axes: list[int], keepdims: int = 1, rank: int = 4) -> onnx.ModelProto:
    """The detector's channel attention in small: a mean over height and width scales the map."""
    shape = [1, 6, 9, 11][:rank]
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], name="ReduceMean.0", axes=axes, keepdims=keepdims),
             helper.make_node("Sigmoid", ["mean"], ["gate"], name="Sigmoid.0"),
             helper.make_node("Mul", ["x", "gate"], ["y"], name="Mul.0")]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_mean_over_height_and_width_becomes_a_global_average_pool(rewrites):
    model = attention([2, 3])
    x = np.random.default_rng(5).normal(size=(1, 6, 9, 11)).astype(np.float32)
    before = run(model, x)
    assert rewrites.reduce_means_to_global_pools(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["GlobalAveragePool", "Sigmoid", "Mul"]
    np.testing.assert_allclose(run(model, x), before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axes, keepdims, rank", [([1], 1, 4), ([2, 3], 0, 4), ([1, 2], 1, 3)])
def test_other_means_are_left_alone(rewrites, axes, keepdims, rank):
    model = attention(axes, keepdims, rank)
    assert rewrites.reduce_means_to_global_pools(model) == 0
    assert model.graph.node[0].op_type == "ReduceMean"


def test_the_shipped_int8_detector_pools_instead_of_reducing(monkeypatch):
    ops = {n.name: n.op_type for n in onnx.load(str(MODELS / "ppocrv6-small" / "det.int8.onnx")).graph.node}
    assert "ReduceMean" not in ops.values()
    assert [ops[f"ReduceMean.{i}"] for i in (0, 2, 4, 6, 8)] == ["GlobalAveragePool"] * 5  # the names stay
    build = models_build(monkeypatch)
    assert next(p for p in build.PACKS if p.name == "ppocrv6-small").det.int8.global_pools
    with pytest.raises(ValueError, match="global_pools"):
        build.Int8Recipe("dynamic", "x", global_pools=True)


def classifier(steps: int = 7, features: int = 12, classes: int = 40) -> onnx.ModelProto:
    """A recogniser's head in small: features at every time step -> MatMul -> bias -> Softmax."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="MatMul.0"),
             helper.make_node("Add", ["logits", "b"], ["biased"], name="Add.0"),
             helper.make_node("Softmax", ["biased"], ["y"], name="Softmax.0", axis=-1)]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, steps, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, steps, classes])],
        [numpy_helper.from_array(rng.normal(0, 0.5, (features, classes)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(0, 0.5, classes).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def quantized_classifier(tmp_path: Path) -> onnx.ModelProto:
    """``classifier()`` through quantize_static as the page reader's recipe runs it (QDQ, per-channel),
    with 7-bit weights: x86 CPUs without VNNI (AVX2 only) add u8 x s8 products in pairs into int16,
    which saturates on random full-range weights, and the exact sums the test checks are the rewrite's."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(7)
            self.batches = iter([{"x": rng.normal(size=(1, 7, 12)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    onnx.save(classifier(), tmp_path / "fp32.onnx")
    quantize_static(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul"], per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=True)
    return onnx.load(tmp_path / "int8.onnx")


def test_the_classifier_becomes_one_integer_matmul_with_its_logits_in_fp32(rewrites, tmp_path):
    model = quantized_classifier(tmp_path)
    assert rewrites.float_classifier(model) == "MatMul.0"
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "MatMulIntegerToFloat", "Softmax"]  # the input's Q, the head, the softmax
    # The output is the softmax of the int8 sums, scaled and biased, with no rounding of the logits.
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    head = model.graph.node[1]
    x = np.random.default_rng(8).normal(size=(1, 7, 12)).astype(np.float32)
    a_scale, a_zero = values[head.input[2]], values[head.input[4]]
    a = np.clip(np.round(x / a_scale) + a_zero, 0, 255) - a_zero.astype(np.float32)
    logits = (a * a_scale) @ (values[head.input[1]].astype(np.float32) * values[head.input[3]]) + values[head.input[6]]
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(run(model, x), expected / expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_a_head_without_its_qdq_classifier_is_refused(rewrites, tmp_path):
    with pytest.raises(ValueError, match="no MatMul -> Q -> DQ -> Add -> Softmax"):
        rewrites.float_classifier(classifier())  # fp32: no QDQ pair after the MatMul
    model = quantized_classifier(tmp_path)
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    model.graph.output.append(helper.make_tensor_value_info(matmul.output[0], TensorProto.FLOAT, None))
    with pytest.raises(ValueError, match="used elsewhere"):
        rewrites.float_classifier(model)


def test_the_shipped_page_readers_compute_their_logits_in_fp32(monkeypatch):
    for name, classes in (("rec_page.int8.onnx", 18710), ("rec_page_narrow.int8.onnx", None)):
        graph = onnx.load(str(MODELS / "ppocrv6-small" / name)).graph
        heads = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
        assert len(heads) == 1 and len(heads[0].input) == 7  # with its bias
        bias = next(i for i in graph.initializer if i.name == heads[0].input[6])
        assert classes is None or bias.dims == [classes]
        assert "Concat.0" not in {n.name for n in graph.node}
    build = models_build(monkeypatch)
    assert next(p for p in build.PACKS if p.name == "ppocrv6-small").rec_page.int8.float_classifier
    with pytest.raises(ValueError, match="float_classifier"):
        build.Int8Recipe("static", "x", float_classifier=True)


def gelu_input(divisor: float = float(np.sqrt(2.0))) -> onnx.ModelProto:
    """The detector's GELU as quantized: x -> Q -> DQ, which feeds both Div(sqrt 2) -> Erf and a Mul."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q.0"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="DQ.0"),
             helper.make_node("Div", ["dq", "c"], ["scaled"], name="Div.0"),
             helper.make_node("Erf", ["scaled"], ["erf"], name="Erf.0"),
             helper.make_node("Mul", ["dq", "erf"], ["y"], name="Mul.0")]
    graph = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 6])],
        [numpy_helper.from_array(np.array(0.03, np.float32), "s"), numpy_helper.from_array(np.array(120, np.uint8), "z"),
         numpy_helper.from_array(np.array([divisor], np.float32), "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_division_of_a_dequantized_map_moves_into_the_scale(rewrites):
    model = gelu_input()
    x = np.random.default_rng(9).normal(size=(1, 4, 5, 6)).astype(np.float32)
    before = run(model, x)
    assert rewrites.divisions_into_dequantize(model) == 1
    onnx.checker.check_model(model)
    # The Mul still reads the first DequantizeLinear; Erf reads a second one with the scale divided.
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Erf", "Mul"]
    np.testing.assert_allclose(run(model, x), before, rtol=1e-6, atol=1e-6)
    assert rewrites.divisions_into_dequantize(gelu_input(-1.0)) == 0  # a negative scale is no DequantizeLinear


def test_the_shipped_int8_detector_divides_in_its_dequantize(monkeypatch):
    ops = [n.op_type for n in onnx.load(str(MODELS / "ppocrv6-small" / "det.int8.onnx")).graph.node]
    assert "Div" not in ops and ops.count("Erf") == 13
    build = models_build(monkeypatch)
    assert next(p for p in build.PACKS if p.name == "ppocrv6-small").det.int8.fold_divisions
    with pytest.raises(ValueError, match="fold_divisions"):
        build.Int8Recipe("static-rec", "x", fold_divisions=True)


def qdq_conv(weights: np.ndarray, bias_scale_factor: float = 1.0) -> onnx.ModelProto:
    """One QDQ convolution as quantize_static writes it: int8 weights and an int32 bias, each behind a
    DequantizeLinear, the bias at the input's scale times the weights'."""
    out = weights.shape[0]
    scale = np.full(out, 0.01, np.float32)
    inits = [numpy_helper.from_array(weights.astype(np.int8), "w_q"), numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(np.zeros(out, np.int8), "w_zero"),
             numpy_helper.from_array(np.arange(out, dtype=np.int32), "b_q"),
             numpy_helper.from_array(scale * 0.02 * bias_scale_factor, "b_scale"),
             numpy_helper.from_array(np.zeros(out, np.int32), "b_zero")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq_w", axis=0),
             helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["b"], name="dq_b", axis=0),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], name="Conv.8", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out, 2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_spliced_convolution_takes_the_other_quantization_s_weights_and_bias_together(monkeypatch):
    build = models_build(monkeypatch)
    eight = qdq_conv(np.full((3, 4, 1, 1), 127))
    seven = qdq_conv(np.full((3, 4, 1, 1), 64), bias_scale_factor=2.0)  # 7-bit: twice the scale
    build.splice_quantized_convs(eight, seven, ["Conv.8"])
    arrays = {i.name: numpy_helper.to_array(i) for i in eight.graph.initializer}
    assert arrays["w_q"].max() == 64
    # ONNX Runtime fuses a QLinearConv only where the bias scale is the input's times the weights'.
    np.testing.assert_array_equal(arrays["b_scale"], numpy_helper.to_array(seven.graph.initializer[4]))
    with pytest.raises(build.BuildError, match=r"Conv\.9"):
        build.splice_quantized_convs(eight, seven, ["Conv.9"])


def test_the_shipped_int8_detector_has_7_bit_weights_where_its_pair_sums_saturate(monkeypatch):
    """x86 without VNNI adds u8 x s8 pairs into int16: weights within [-64, 64] cannot overflow it
    (255 x 64 x 2 < 32,768), so those convolutions need no exact sums; the others keep 8 bits."""
    build = models_build(monkeypatch)
    recipe = next(p for p in build.PACKS if p.name == "ppocrv6-small").det.int8
    model = onnx.load(str(MODELS / "ppocrv6-small" / "det.int8.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    widest = {n.name: int(np.abs(arrays[producers[n.input[1]].input[0]].astype(np.int32)).max())
              for n in model.graph.node if n.op_type == "Conv" and n.input[1] in producers}
    assert len(recipe.seven_bit_convs) == 29 and set(recipe.seven_bit_convs) <= set(widest)
    assert all(widest[name] <= 64 for name in recipe.seven_bit_convs)
    assert all(widest[name] == 127 for name in set(widest) - set(recipe.seven_bit_convs))
    with pytest.raises(ValueError, match="seven_bit_convs"):
        build.Int8Recipe("dynamic", "x", seven_bit_convs=("Conv.8",))


def test_saturating_convs_tries_every_quantized_convolution_and_nothing_else(monkeypatch):
    build = models_build(monkeypatch)  # puts models/ on the path
    sys.modules.pop("saturating_convs", None)
    import saturating_convs

    sys.modules.pop("saturating_convs", None)
    sys.modules.pop("build", None)  # its own import of build.py, not left for the next test

    model = qdq_conv(np.full((3, 4, 1, 1), 127))
    float_conv = helper.make_node("Conv", ["y", "w_float"], ["z"], name="Conv.9", kernel_shape=[1, 1])
    model.graph.node.append(float_conv)
    model.graph.initializer.append(numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w_float"))
    assert saturating_convs.quantized_convs(model) == ["Conv.8"]
    assert build.V6_SMALL_DET_SATURATING == next(p for p in build.PACKS if p.name == "ppocrv6-small").det.int8.seven_bit_convs


def test_the_build_refuses_onnx_versions_other_than_the_packs_were_made_with(monkeypatch, capsys):
    # onnxruntime 1.24 wrote an unquantized "int8" CRNN that passed every gate
    build = models_build(monkeypatch)
    monkeypatch.setattr(build, "BUILD_VERSIONS", {"onnx": "1.0.0", "onnxruntime": "1.0.0"})
    assert build.main(["--only", "crnn", "--check"]) == 2
    assert "the packs are built with" in capsys.readouterr().err


def test_an_int8_file_that_quantized_nothing_is_caught(monkeypatch):
    """onnxruntime 1.24 left the CRNN's weights in Constant nodes and quantized nothing: the "int8"
    file was the fp32 one and passed every gate. The build counts the quantized operators."""
    build = models_build(monkeypatch)
    assert build.quantized_ops(onnx.load(str(MODELS / "crnn" / "rec.fp32.onnx"))) == 0
    assert build.quantized_ops(onnx.load(str(MODELS / "crnn" / "rec.int8.onnx"))) > 0
    assert build.quantized_ops(onnx.load(str(MODELS / "ppocrv6-small" / "rec_page.int8.onnx"))) > 0
