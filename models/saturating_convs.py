"""Find the convolutions of a static int8 detector whose u8 x s8 pair sums saturate on this CPU.

On x86 CPUs without VNNI (AVX2 only: AMD Zen 1-3, Intel before Ice Lake) ONNX Runtime multiplies
uint8 activations by int8 weights with an instruction that adds each pair of products into int16,
which saturates when both weights of a pair are large; ``session.x64quantprecision`` makes it sum
exactly (u8 x u8) at ~1.25x the detector's time. 7-bit weights cannot saturate (255 x 64 x 2 <
32,768) but are coarser, so the build gives them only to the convolutions that need them
(build.py ``Int8Recipe.seven_bit_convs``). This script finds those: it quantizes the detector twice
(8-bit and 7-bit weights, the build's recipe otherwise), and for each convolution runs the file
with that one at 8 bits and the rest at 7 with saturating and with exact sums over calibration
pages; a convolution whose probability map differs between the two saturates. Run it on an
AVX2-only x86 CPU: on VNNI and ARM the two kernels agree and it finds none (it says so).

    .venv/bin/python models/saturating_convs.py [--pages 6]      # prints the tuple for build.py
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import build
import measure_int8
import numpy as np
import onnx


def quantized_convs(model: onnx.ModelProto) -> list[str]:
    """The Conv nodes whose weights come from a DequantizeLinear, in graph order."""
    producers = {output: node for node in model.graph.node for output in node.output}
    return [node.name for node in model.graph.node if node.op_type == "Conv"
            and getattr(producers.get(node.input[1]), "op_type", "") == "DequantizeLinear"]


def saturating(eight: onnx.ModelProto, seven: onnx.ModelProto, tensors: Sequence[np.ndarray]) -> list[str]:
    convs = quantized_convs(eight)
    found = []
    for index, name in enumerate(convs):
        model = copy.deepcopy(seven)  # every conv at 7 bits but this one
        build.splice_quantized_convs(model, eight, [name])
        data = model.SerializeToString()
        fast, exact = measure_int8.open_session(data, exact_sums=False), measure_int8.open_session(data)
        differs = any(not np.array_equal(measure_int8.run(fast, x), measure_int8.run(exact, x)) for x in tensors)
        print(f"{index + 1}/{len(convs)} {name} {'saturates' if differs else 'exact'}", file=sys.stderr, flush=True)
        if differs:
            found.append(name)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", default="ppocrv6-small")
    parser.add_argument("--pages", type=int, default=6, help="calibration pages to run (default %(default)s)")
    parser.add_argument("--eval-dev", type=Path, default=measure_int8.DEFAULT_EVAL_DEV)
    parser.add_argument("--cache", type=Path, default=build.DEFAULT_CACHE)
    args = parser.parse_args(argv)
    spec = next(p for p in build.PACKS if p.name == args.pack).det
    assert spec.int8 is not None
    source = build.Sources(args.cache.expanduser()).read(spec.source)
    with tempfile.TemporaryDirectory() as tmp:
        # The build's recipe with every convolution at 8 bits, then with every one at 7.
        eight = onnx.load_from_string(build.quantize(spec, replace(spec.int8, seven_bit_convs=()), source,
                                                     args.eval_dev, Path(tmp)))
        all_seven = replace(spec.int8, seven_bit_convs=tuple(quantized_convs(eight)))
        seven = onnx.load_from_string(build.quantize(spec, all_seven, source, args.eval_dev, Path(tmp)))
    tensors = [measure_int8.det_tensor(measure_int8.read_bgr(p))
               for p in measure_int8.calibration_pages(args.eval_dev)[: args.pages]]
    found = saturating(eight, seven, tensors)
    if not found:
        print("no convolution saturates on this CPU (VNNI or ARM?): run this on an AVX2-only x86 CPU")
        return 1
    print("(" + ", ".join(f'"{name}"' for name in found) + ",)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
