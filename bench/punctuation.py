"""Does a static int8 recogniser keep small punctuation off its calibration domain?

The page reader is calibrated on half-a eval-dev crops, where it reads the enumeration comma (、)
as fp32 does. This renders eval-dev's Chinese line texts again, in the printed AR PL UMing and the
brush-written AR PL UKai fonts (Debian's fonts-arphic-uming and fonts-arphic-ukai: dev only), at
three sizes with slight rotation, blur, noise and JPEG, and reads every line with fp32, the
dynamic int8 variant and the page reader (or other files given), then prints CER, exact lines,
agreement with fp32 and how many of the 、 and ， each kept. ``--search`` bypasses each activation
quantization of a QDQ file in turn and ranks them by the 、 steps' margin over the blank: the
tensor it names is the one to calibrate on its whole range (models/static_rec.py, SMALL_FULL_RANGE).

    .venv/bin/python bench/punctuation.py                      # the shipped files
    .venv/bin/python bench/punctuation.py --page-reader /tmp/rec_page.int8.onnx
    .venv/bin/python bench/punctuation.py --search
    .venv/bin/python bench/punctuation.py --style inverted     # light text on dark; or slide: on blue
"""

from __future__ import annotations

import argparse
import random
import sys
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_ocr.engine.decode import Charset, ctc_greedy, load_charset  # noqa: E402
from edge_ocr.engine.preprocess import resize_for_recognition  # noqa: E402
from edge_ocr.tools.scoring import edit_distance  # noqa: E402

PACK = ROOT / "models" / "ppocrv6-small"
FONTS = {"ming": ("/usr/share/fonts/truetype/arphic/uming.ttc", 1), "kai": ("/usr/share/fonts/truetype/arphic/ukai.ttc", 0)}
SEGMENT = 16  # characters per rendered line


def texts(eval_dev: Path, limit: int) -> list[str]:
    """Segments of eval-dev's Chinese line labels with at least 4 hanzi."""
    out = []
    for row in (eval_dev / "zh" / "lines" / "labels.tsv").read_text(encoding="utf-8").splitlines():
        text = row.split("\t")[1].replace(" ", "")
        if sum("\u4e00" <= c <= "\u9fff" for c in text) >= 4:
            out += [text[i : i + SEGMENT] for i in range(0, len(text), SEGMENT) if len(text[i : i + SEGMENT]) >= 4]
    return out[:limit]


def render(text: str, font_file: str, index: int, rng: random.Random) -> np.ndarray:
    """A BGR crop of ``text``: dark ink on light paper, tilted ±1.5°, blurred, noisy, JPEG-compressed."""
    from PIL import Image, ImageDraw, ImageFont  # dev only, like the fonts

    font = ImageFont.truetype(font_file, rng.choice([28, 36, 44]), index=index)
    left, top, right, bottom = font.getbbox(text)
    width, height = right - left + 24, bottom - top + 20
    image = Image.new("L", (width, height), rng.randint(215, 250))
    ImageDraw.Draw(image).text((12 - left, 10 - top), text, font=font, fill=rng.randint(10, 70))
    pixels = np.array(image)
    tilt = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-1.5, 1.5), 1.0)
    pixels = cv2.warpAffine(pixels, tilt, (width, height), borderMode=cv2.BORDER_REPLICATE)
    pixels = cv2.GaussianBlur(pixels, (3, 3), rng.uniform(0.3, 1.0))
    noise = np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 6, pixels.shape)
    pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
    _, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(60, 90)])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)


def restyle(crop: np.ndarray, style: str) -> np.ndarray:
    """``paper`` as rendered; ``inverted``: light text on dark; ``slide``: light text on blue."""
    if style == "paper":
        return crop
    ink = (255 - crop).astype(np.float32) / 255.0
    if style == "inverted":
        return (ink * 255).astype(np.uint8)
    text, background = np.array([255, 230, 200], np.float32), np.array([140, 60, 20], np.float32)  # BGR
    return (ink * text + (1 - ink) * background).astype(np.uint8)


def engine_input(crop: np.ndarray) -> np.ndarray:
    width = max(96, int(np.ceil(48 * crop.shape[1] / crop.shape[0])))
    return resize_for_recognition(crop, 48, width)[None]


def session(model: str | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def read(sess: ort.InferenceSession, x: np.ndarray, charset: Charset) -> str:
    return ctc_greedy(sess.run(None, {sess.get_inputs()[0].name: x})[0], charset)[0].text


def compare(models: dict[str, str], lines: list[str], charset: Charset, style: str = "paper") -> None:
    sessions = {name: session(path) for name, path in models.items()}
    print("| font | model | CER % | exact % | same as fp32 % | 、 kept | ， kept |")
    print("|---|---|---|---|---|---|---|")
    for font, (font_file, index) in FONTS.items():
        rng = random.Random(11)
        inputs = [engine_input(restyle(render(t, font_file, index, rng), style)) for t in lines]
        readings = {name: [read(s, x, charset).replace(" ", "") for x in inputs] for name, s in sessions.items()}
        for name, texts_read in readings.items():
            truth = [unicodedata.normalize("NFKC", t) for t in lines]
            got = [unicodedata.normalize("NFKC", t) for t in texts_read]
            errors = sum(edit_distance(t, g) for t, g in zip(truth, got))
            exact = sum(t == g for t, g in zip(truth, got))
            same = sum(a == b for a, b in zip(readings["fp32"], texts_read))
            kept = {mark: f"{sum(t.count(mark) for t in texts_read)} / {sum(t.count(mark) for t in lines)}"
                    for mark in "、，"}
            print(f"| {font} | {name} | {100 * errors / sum(map(len, truth)):.2f} | {100 * exact / len(lines):.1f} "
                  f"| {100 * same / len(lines):.1f} | {kept['、']} | {kept['，']} |")


def search(page_reader: str, lines: list[str], charset: Charset) -> None:
    import onnx

    comma = charset.chars.index("、") + 1
    reference = session(str(PACK / "rec.fp32.onnx"))
    probes = []  # (input, the time steps where fp32 emits 、)
    for font_file, index in FONTS.values():
        rng = random.Random(11)
        for text in lines:
            x = engine_input(render(text, font_file, index, rng))
            if "、" in text:
                steps = np.flatnonzero(reference.run(None, {reference.get_inputs()[0].name: x})[0][0].argmax(1) == comma)
                if steps.size:
                    probes.append((x, steps))

    def margin(sess: ort.InferenceSession) -> tuple[float, int]:
        logs, kept = [], 0
        for x, steps in probes:
            probs = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
            logs.extend(np.log(probs[steps, comma] + 1e-9) - np.log(probs[steps, 0] + 1e-9))
            kept += int((probs[steps].argmax(1) == comma).sum())
        return float(np.mean(logs)), kept

    print(f"{len(probes)} lines, {sum(s.size for _, s in probes)} steps where fp32 reads 、")
    print("fp32: margin %.2f, kept %d" % margin(reference))
    base = onnx.load(page_reader)
    print("as given: margin %.2f, kept %d" % margin(session(page_reader)))
    ranked = []
    for quantize in [n for n in base.graph.node if n.op_type == "QuantizeLinear"]:
        model = onnx.ModelProto()
        model.CopyFrom(base)
        graph = model.graph
        dequantizers = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == quantize.output[0]]
        rename = {d.output[0]: quantize.input[0] for d in dequantizers}
        if any(o.name in rename for o in graph.output):
            continue
        for node in graph.node:
            node.input[:] = [rename.get(v, v) for v in node.input]
        dropped = {quantize.name} | {d.name for d in dequantizers}
        kept_nodes = [n for n in graph.node if n.name not in dropped]
        del graph.node[:]
        graph.node.extend(kept_nodes)
        ranked.append((margin(session(model.SerializeToString())), quantize.input[0]))
    print("| activation kept fp32 | margin | 、 kept |")
    print("|---|---|---|")
    for (value, kept), tensor in sorted(ranked, reverse=True)[:10]:
        print(f"| {tensor} | {value:.2f} | {kept} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dev", type=Path, default=ROOT.parent / "shared" / "eval-dev")
    parser.add_argument("--page-reader", default=str(PACK / "rec_page.int8.onnx"))
    parser.add_argument("--lines", type=int, default=240)
    parser.add_argument("--search", action="store_true", help="rank the page reader's activation quantizations")
    parser.add_argument("--style", choices=("paper", "inverted", "slide"), default="paper")
    args = parser.parse_args()
    missing = [f for f, _ in FONTS.values() if not Path(f).is_file()]
    if missing:
        sys.exit(f"needs {', '.join(missing)}: apt-get install fonts-arphic-uming fonts-arphic-ukai")
    charset = load_charset((PACK / "charset.txt").read_text(encoding="utf-8"), True)
    lines = texts(args.eval_dev, args.lines)
    if args.search:
        search(args.page_reader, lines, charset)
    else:
        compare({"fp32": str(PACK / "rec.fp32.onnx"), "dynamic int8": str(PACK / "rec.int8.onnx"),
                 "page reader": args.page_reader}, lines, charset, args.style)


if __name__ == "__main__":
    main()
