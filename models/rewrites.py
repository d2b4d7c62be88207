"""Graph rewrites that keep a model's function and change only how ONNX Runtime computes it.

``split_concat_conv``: a Concat over channels whose only consumer is an fp32 Conv becomes one Conv
per input, each with its slice of the weights, summed. PP-OCRv6's detector joins its stem's two
branches (a max-pool and two 2x2 convolutions, 32 channels each at half the input's size) before a
3x3 convolution: the concatenated copy was the detector's largest single buffer (~36 MB at 960 px)
and, with the reorders into ONNX Runtime's blocked layout around it, ~11 % of its time at one
thread. Summed convolutions stay in that layout, and ONNX Runtime fuses the Add and the Relu after
it into the second one. Only the order of fp32 additions changes (README, Accuracy).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper


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
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(tensor)
    while node is not None and node.op_type in ("Relu", "MaxPool", "AveragePool", "Add", "Mul", "Sigmoid",
                                                "HardSigmoid", "Clip"):
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Conv" or node.input[1] not in initializers:
        raise ValueError(f"cannot tell the channels of {tensor!r}")
    return int(initializers[node.input[1]].dims[0])
