"""Graph rewrites that keep a model's function and change only how ONNX Runtime computes it.

``split_concat_conv``: a Concat over channels whose only consumer is an fp32 Conv becomes one Conv
per input, each with its slice of the weights, summed. PP-OCRv6's detector joins its stem's two
branches (a max-pool and two 2x2 convolutions, 32 channels each at half the input's size) before a
3x3 convolution: the concatenated copy was the detector's largest single buffer (~36 MB at 960 px)
and, with the reorders into ONNX Runtime's blocked layout around it, ~11 % of its time at one
thread. Summed convolutions stay in that layout, and ONNX Runtime fuses the Add and the Relu after
it into the second one. Only the order of fp32 additions changes (docs/accuracy.md).

``fuse_hardswish`` and ``fold_scalar_affines``: paddle2onnx writes PP-OCRv4's backbone (the plate
specialist) as convolutions each followed by a scalar affine (two ops), a HardSwish in four ops and
another affine; ONNX Runtime fuses none of them once QDQ pairs sit around the convolutions, and they
were half the int8 file's time. Fused and folded before calibrating, the same function runs in a
quarter of the element-wise passes (models/README.md).

``reduce_means_to_global_pools``: PP-OCRv6's detector averages five feature maps over height and
width with ReduceMean; as GlobalAveragePool (the same mean) between its QDQ pair ONNX Runtime runs
it as one quantized op, and the detector took 0.90x the time at one thread.

``divisions_into_dequantize``: PP-OCRv6's detector writes each of its 13 GELUs with erf, as
``x * (1 + erf(x / sqrt 2)) / 2``; quantized, ``x`` comes from a DequantizeLinear and the division is
one more fp32 pass over the map. A DequantizeLinear whose scale is divided instead gives the same
values (to float rounding) in the pass it already makes: 0.94x the detector's time at one thread.

``float_classifier``: a static int8 recogniser's classifier (PP-OCRv6: 120 features -> 18,710 classes at
every time step) is quantized as MatMul -> QuantizeLinear -> DequantizeLinear -> Add(bias) -> Softmax:
the logits rounded to uint8 and expanded again, then the bias added, three passes over a (T, 18,710)
tensor. As one MatMulIntegerToFloat (com.microsoft) the logits come in fp32 straight from the int32
sums with the bias added, one pass; the page reader took ~0.93x the time on a long line at one thread,
and its logits are no longer rounded (models/README.md).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.shape_inference


def split_concat_conv(model: onnx.ModelProto, concat_name: str) -> None:
    """Replace ``Concat(a, b, ...) -> Conv(W, B)`` by ``Conv(a, W_a, B) + Conv(b, W_b) + ...`` in place.

    The Concat must join channels (axis 1) of inputs whose channel counts are known from the
    convolutions or pools that make them, feed nothing but the Conv, and the Conv must have
    plain fp32 weights (an initializer) and group 1. Raises ValueError otherwise.
    """
    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    concat = nodes.get(concat_name)
    if concat is None or concat.op_type != "Concat":
        raise ValueError(f"no Concat node {concat_name!r}")
    axis = next((onnx.helper.get_attribute_value(a) for a in concat.attribute if a.name == "axis"), None)
    consumers = [n for n in graph.node if concat.output[0] in n.input]
    if axis != 1 or len(consumers) != 1 or consumers[0].op_type != "Conv":
        raise ValueError(f"{concat_name}: not a channel Concat feeding one Conv")
    conv = consumers[0]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    initializers = {i.name: i for i in graph.initializer}
    if attributes.get("group", 1) != 1 or conv.input[1] not in initializers:
        raise ValueError(f"{conv.name}: needs group 1 and fp32 weights as an initializer")
    weights = onnx.numpy_helper.to_array(initializers[conv.input[1]])
    widths = [_channels(graph, name, initializers) for name in concat.input]
    if sum(widths) != weights.shape[1]:
        raise ValueError(f"{concat_name}: inputs of {widths} channels, {conv.name} takes {weights.shape[1]}")

    replacement, partial_sums = [], []
    start = 0
    for index, (name, width) in enumerate(zip(concat.input, widths)):
        slice_name = f"{conv.name}.weights.{index}"
        graph.initializer.append(onnx.numpy_helper.from_array(
            np.ascontiguousarray(weights[:, start : start + width]), slice_name))
        start += width
        inputs = [name, slice_name] + (list(conv.input[2:3]) if index == 0 else [])  # the bias once
        output = f"{conv.name}.part.{index}"
        replacement.append(onnx.helper.make_node("Conv", inputs, [output], name=f"{conv.name}.{index}", **attributes))
        partial_sums.append(output)
    total = partial_sums[0]
    for index, part in enumerate(partial_sums[1:], start=1):
        out = conv.output[0] if index == len(partial_sums) - 1 else f"{conv.name}.sum.{index}"
        replacement.append(onnx.helper.make_node("Add", [total, part], [out], name=f"{conv.name}.sum.{index}"))
        total = out

    position = list(graph.node).index(concat)
    kept = [n for n in graph.node if n is not concat and n is not conv]
    del graph.node[:]
    graph.node.extend(kept[:position] + replacement + kept[position:])
    if not any(conv.input[1] in n.input for n in graph.node):
        graph.initializer.remove(initializers[conv.input[1]])


def _channels(graph: onnx.GraphProto, tensor: str, initializers: dict[str, onnx.TensorProto]) -> int:
    """Channels of ``tensor``: a Conv's output channels, through any element-wise op or pool."""
    producer = _producers(graph)
    node = producer.get(tensor)
    while node is not None and node.op_type in ("Relu", "MaxPool", "AveragePool", "Add", "Mul", "Sigmoid",
                                                "HardSigmoid", "Clip"):
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Conv" or node.input[1] not in initializers:
        raise ValueError(f"cannot tell the channels of {tensor!r}")
    return int(initializers[node.input[1]].dims[0])


def reduce_means_to_global_pools(model: onnx.ModelProto) -> int:
    """Replace every ReduceMean over axes 2 and 3 of a 4-D tensor, keeping them, by GlobalAveragePool
    in place; returns how many. The rank comes from ONNX shape inference; a tensor of unknown rank or
    axes given as an input (opset 18) is left alone."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(inferred.graph.value_info) + list(inferred.graph.input)
             if v.type.tensor_type.HasField("shape")}
    replaced = 0
    for node in model.graph.node:
        if node.op_type != "ReduceMean" or len(node.input) != 1 or ranks.get(node.input[0]) != 4:
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if sorted(attributes.get("axes", [])) not in ([2, 3], [-2, -1]) or attributes.get("keepdims", 1) != 1:
            continue
        node.op_type = "GlobalAveragePool"
        del node.attribute[:]
        replaced += 1
    return replaced


def divisions_into_dequantize(model: onnx.ModelProto) -> int:
    """Replace, in place, each ``Div(DequantizeLinear(q, s, z), c)`` with ``c`` a positive
    one-element constant and ``s`` a one-element initializer by ``DequantizeLinear(q, s / c, z)``;
    returns how many. The DequantizeLinear stays where it has other consumers."""
    graph = model.graph
    constants = _constants(graph)
    consumers = _consumers(graph)
    producer = _producers(graph)
    initializers = {i.name for i in graph.initializer}
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for div in graph.node:
        if div.op_type != "Div":
            continue
        dequantize, divisor = producer.get(div.input[0]), constants.get(div.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or divisor is None or divisor.size != 1:
            continue
        scale = dequantize.input[1]
        if scale not in initializers or constants[scale].size != 1 or float(divisor.reshape(())) <= 0:
            continue
        name = f"{div.name}.scale"
        graph.initializer.append(onnx.numpy_helper.from_array(
            (constants[scale] / divisor.reshape(())).astype(constants[scale].dtype), name))
        replaced[id(div)] = onnx.helper.make_node(
            "DequantizeLinear", [dequantize.input[0], name, *dequantize.input[2:]], [div.output[0]],
            name=f"{div.name}.dequantize", **{a.name: onnx.helper.get_attribute_value(a) for a in dequantize.attribute})
        if len(consumers[dequantize.output[0]]) == 1:
            dropped.add(id(dequantize))
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return len(replaced)


def float_classifier(model: onnx.ModelProto) -> str:
    """Replace, in place, the MatMul whose logits feed the graph's output Softmax, with its QDQ
    pairs and bias Add, by one MatMulIntegerToFloat that adds the bias; returns the MatMul's name.

    Expected (as onnxruntime's quantize_static writes it): ``DQ(a) , DQ(W) -> MatMul -> Q -> DQ ->
    Add(bias, a 1-D initializer) -> Softmax -> graph output``, each intermediate used once, ``a``
    quantized per tensor and ``W`` per tensor or per output column. Raises ValueError otherwise.
    """
    graph = model.graph
    consumers = _consumers(graph)
    producer = _producers(graph)
    initializers = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    softmax = next((n for n in graph.node if n.op_type == "Softmax" and n.output[0] in outputs), None)
    chain = [softmax]
    for op_type in ("Add", "DequantizeLinear", "QuantizeLinear", "MatMul"):
        node = producer.get(chain[-1].input[0]) if chain[-1] is not None else None
        if node is not None and op_type == "Add" and node.input[0] in initializers:
            node = None  # the bias must be the second operand, as the quantizer writes it
        chain.append(node if node is not None and node.op_type == op_type else None)
    if any(n is None for n in chain):
        raise ValueError("no MatMul -> Q -> DQ -> Add -> Softmax classifier before the graph's output")
    _, add, dequantize, quantize, matmul = chain
    bias = initializers.get(add.input[1])
    if bias is None or len(bias.dims) != 1:
        raise ValueError(f"{add.name}: the bias must be a 1-D initializer")
    if any(len(consumers[n.output[0]]) != 1 or n.output[0] in outputs for n in (matmul, quantize, dequantize)):
        raise ValueError(f"{matmul.name}: its logits are used elsewhere")
    activation, weights = (producer.get(name) for name in matmul.input)
    if any(n is None or n.op_type != "DequantizeLinear" or len(n.input) != 3 for n in (activation, weights)):
        raise ValueError(f"{matmul.name}: both operands must come from DequantizeLinear with zero points")
    activation_scale = initializers.get(activation.input[1])
    if weights.input[0] not in initializers or activation_scale is None or activation_scale.dims:
        raise ValueError(f"{matmul.name}: needs int8 weights as an initializer and a per-tensor activation scale")
    fused = onnx.helper.make_node(
        "MatMulIntegerToFloat",
        [activation.input[0], weights.input[0], activation.input[1], weights.input[1], activation.input[2],
         weights.input[2], add.input[1]],
        [add.output[0]], name=f"{matmul.name}.integer_to_float", domain="com.microsoft")
    dropped = {id(matmul), id(quantize), id(dequantize), id(add)}
    dropped |= {id(n) for n in (activation, weights) if len(consumers[n.output[0]]) == 1}
    nodes = [fused if n is add else n for n in graph.node if n is add or id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return matmul.name


def fuse_hardswish(model: onnx.ModelProto) -> int:
    """Replace every ``x * Clip(x + 3, 0, 6) / 6`` (four element-wise passes, as paddle2onnx writes
    PP-OCRv4's activations) by one ``HardSwish(x)`` in place; returns how many. The graph must import
    opset 14 or later (HardSwish's first version). Only exact constants match."""
    if default_opset(model) < 14:
        raise ValueError("HardSwish needs opset 14")
    graph = model.graph
    constants = _constants(graph)
    consumers = _consumers(graph)
    producer = _producers(graph)
    replaced: dict[int, onnx.NodeProto] = {}  # id of the Div -> its HardSwish
    dropped: set[int] = set()
    for div in graph.node:
        if div.op_type != "Div" or not _is_scalar(constants, div.input[1], 6.0):
            continue
        mul = producer.get(div.input[0])
        if mul is None or mul.op_type != "Mul":
            continue
        for x, clipped in (mul.input, reversed(mul.input)):
            clip = producer.get(clipped)
            add = producer.get(clip.input[0]) if clip is not None and clip.op_type == "Clip" else None
            if (add is None or add.op_type != "Add" or len(clip.input) != 3
                    or not (_is_scalar(constants, clip.input[1], 0.0) and _is_scalar(constants, clip.input[2], 6.0))):
                continue
            if x not in add.input or not _is_scalar(constants, add.input[1] if add.input[0] == x else add.input[0], 3.0):
                continue
            if any(len(consumers[n.output[0]]) != 1 for n in (add, clip, mul)):
                continue
            replaced[id(div)] = onnx.helper.make_node("HardSwish", [x], [div.output[0]], name=f"{div.name}.hardswish")
            dropped |= {id(add), id(clip), id(mul)}
            break
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return len(replaced)


def fold_scalar_affines(model: onnx.ModelProto, quantized: Collection[str] = ()) -> int:
    """Fold scalar ``y = x * s + b`` pairs (PP-OCRv4's learnable affine blocks) into convolutions, in
    place; returns how many pairs or halves of pairs were folded.

    Before convolutions without padding that are the pair's only consumers: ``W * s``,
    ``B + b * sum(W)`` per output channel (with padding the border would see ``b`` where it saw 0, so
    a padded Conv keeps its pair). After a Conv whose output feeds only the pair: ``W * s``,
    ``B * s + b``; into the ``quantized`` convolutions (those whose outputs will be quantized) only
    ``s`` folds and the Add stays: a uint8 range always holds 0, and a shifted output would spend
    most of it on values that never occur (the plate specialist's agreement with fp32 fell from
    0.98 to 0.70 of strings). A pair is a Mul by a one-element constant whose output feeds only an
    Add of one; the Mul alone or the Add alone folds the same way. The weights and bias must be
    initializers used by that Conv alone.
    """
    folded = 0
    while _fold_one_affine(model.graph, set(quantized)):
        folded += 1
    _drop_unused_initializers(model.graph)
    return folded


def _fold_one_affine(graph: onnx.GraphProto, quantized: set[str]) -> bool:
    constants = _constants(graph)
    consumers = _consumers(graph)
    initializers = {i.name: i for i in graph.initializer}
    uses = {name: sum(name in n.input for n in graph.node) for name in initializers}
    outputs = {o.name for o in graph.output}

    def own_params(conv: onnx.NodeProto) -> bool:
        return (conv.input[1] in initializers and uses[conv.input[1]] == 1
                and (len(conv.input) < 3 or not conv.input[2] or (conv.input[2] in initializers and uses[conv.input[2]] == 1)))

    for node in graph.node:
        pair = _affine_pair(node, constants, consumers)
        if pair is None:
            continue
        first, last, x, scale, shift = pair
        out = last.output[0]
        after = consumers[out]
        if after and all(n.op_type == "Conv" and not _padded(n) and own_params(n) for n in after):
            for conv in after:
                weights, bias = _conv_params(conv, initializers)
                _set_conv_params(graph, conv, initializers, weights * scale,
                                 bias + shift * weights.sum(axis=tuple(range(1, weights.ndim))))
                conv.input[0] = x
            _remove(graph, {id(first), id(last)})
            return True
        producer = next((n for n in graph.node if x in n.output), None)
        if (producer is None or producer.op_type != "Conv" or len(consumers[x]) != 1 or not own_params(producer)
                or out in outputs):
            continue
        weights, bias = _conv_params(producer, initializers)
        if producer.name not in quantized:
            _set_conv_params(graph, producer, initializers, weights * scale, bias * scale + shift)
            producer.output[0] = out
            _remove(graph, {id(first), id(last)})
            return True
        if first.op_type == "Mul":  # the scale only; the Add (if any) now takes the Conv's output
            _set_conv_params(graph, producer, initializers, weights * scale, bias * scale)
            producer.output[0] = first.output[0]
            _remove(graph, {id(first)})
            return True
    return False


def _affine_pair(node: onnx.NodeProto, constants: dict[str, np.ndarray], consumers: dict[str, list[onnx.NodeProto]]
                 ) -> tuple[onnx.NodeProto, onnx.NodeProto, str, float, float] | None:
    """``(first, last, x, s, b)`` when ``node`` starts ``x * s (+ b)`` or ``x + b`` with one-element constants."""
    def operand(n: onnx.NodeProto) -> tuple[str, float] | None:
        if n.op_type not in ("Mul", "Add") or len(n.input) != 2:
            return None
        for x, c in (n.input, reversed(n.input)):
            if c in constants and constants[c].size == 1 and x not in constants:
                return x, float(constants[c].reshape(()))
        return None

    head = operand(node)
    if head is None:
        return None
    x, value = head
    if node.op_type == "Add":
        return node, node, x, 1.0, value
    following = consumers[node.output[0]]
    if len(following) == 1 and following[0].op_type == "Add":
        tail = operand(following[0])
        if tail is not None and tail[0] == node.output[0]:
            return node, following[0], x, value, tail[1]
    return node, node, x, value, 0.0


def _conv_params(conv: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> tuple[np.ndarray, np.ndarray]:
    weights = onnx.numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float64)
    if len(conv.input) > 2 and conv.input[2]:
        return weights, onnx.numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float64)
    return weights, np.zeros(weights.shape[0])


def _set_conv_params(graph: onnx.GraphProto, conv: onnx.NodeProto, initializers: dict[str, onnx.TensorProto],
                     weights: np.ndarray, bias: np.ndarray) -> None:
    graph.initializer.remove(initializers[conv.input[1]])
    graph.initializer.append(onnx.numpy_helper.from_array(weights.astype(np.float32), conv.input[1]))
    if len(conv.input) > 2 and conv.input[2]:
        graph.initializer.remove(initializers[conv.input[2]])
        name = conv.input[2]
    else:
        name = f"{conv.name}.bias"
        while len(conv.input) < 3:
            conv.input.append("")
        conv.input[2] = name
    graph.initializer.append(onnx.numpy_helper.from_array(bias.astype(np.float32), name))


def _padded(conv: onnx.NodeProto) -> bool:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    return any(attributes.get("pads", [])) or auto_pad not in (b"NOTSET", b"VALID")  # string attributes are bytes


def _remove(graph: onnx.GraphProto, ids: set[int]) -> None:
    kept = [n for n in graph.node if id(n) not in ids]
    del graph.node[:]
    graph.node.extend(kept)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return values


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in graph.node for name in node.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    for node in graph.node:
        for name in node.output:
            found.setdefault(name, [])
    return found


def _is_scalar(constants: dict[str, np.ndarray], name: str, value: float) -> bool:
    return name in constants and constants[name].size == 1 and float(constants[name].reshape(())) == value


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default (ai.onnx) domain that ``model`` imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
