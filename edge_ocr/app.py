"""The daemon: builds the engine, pipeline, sources and sinks from Config, owns their threads,
handles SIGTERM/SIGINT (clean stop) and SIGHUP (reload), talks to systemd. Imports all but cli.

Data flow: FolderSource/CameraSource threads ``source:<name>`` → Pipeline queue → thread ``pipeline``
(engine) → sinks (MqttSink spool) → ``job.on_done`` (done/ or failed/). Stop runs in reverse.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import psutil

from edge_ocr import allocator
from edge_ocr.api import HttpServer, make_app
from edge_ocr.cache import CachedOcr
from edge_ocr.config import (
    CameraSourceConfig,
    Config,
    EngineConfig,
    FolderSourceConfig,
    SourceConfig,
    config_diff,
    config_to_json,
    find_config,
    is_live,
    load_config,
    with_live,
)
from edge_ocr.engine.types import Region
from edge_ocr.errors import ConfigError, ExitCode, ImageError, UnknownPack
from edge_ocr.fit import check_fit
from edge_ocr.guard import Guard, GuardState, IdleTrim, Level, read_memory
from edge_ocr.notify import Notifier
from edge_ocr.pipeline import Engine, Pipeline, Sink, WorkMeter, count_engine_call
from edge_ocr.readiness import Readiness, daemon_readiness
from edge_ocr.results import Result, status_for
from edge_ocr.sinks.files import ResultFiles
from edge_ocr.sinks.mqtt import MqttSink
from edge_ocr.sources.base import Source, SourceStatus
from edge_ocr.sources.camera import CameraSource
from edge_ocr.sources.fleet import FleetWorker
from edge_ocr.sources.folder import FolderSource
from edge_ocr.stats import Stats

log = logging.getLogger(__name__)

# (the [engine] section, whether the sources read whole pages) -> the engine and its (pack, version)
EngineFactory = Callable[[EngineConfig, bool], tuple[Engine, tuple[str, str]]]
JOIN_TIMEOUT_S = 5.0
SOURCES_READY_S = 10.0  # READY=1 waits this long at most for the sources' first attempts (a camera's open)
# On SIGTERM the images being read (a page, an HTTP request) get this long, all together, to finish
# and be answered: a 48 MP photo takes ~7 s here, a page more on a Pi. The rest of the unit's
# TimeoutStopSec (20 s) is for the broker's goodbyes (MqttSink.close: up to 3 s) and the guard, so
# systemd never has to SIGKILL (a test keeps 5 s between them).
STOP_BUDGET_S = 12.0
# How long the start waits for the sources' retained states (MqttSink.previous_read).
PREVIOUS_WAIT_S = 2.0
# Under memory pressure detection runs on smaller inputs (960 → 640 px: ~0.45x the activations).
SOFT_DET_LIMIT_SIDE = 640


def build_engine(cfg: EngineConfig, pages: bool = True) -> tuple[Engine, tuple[str, str]]:
    """The real OcrEngine for ``[engine]`` and its (pack name, version). Raises ModelError.

    ``pages``: some source reads whole images (a folder, a camera without regions, the fleet), so
    the detector and the page reader are loaded now and the first page waits for no load. Without
    (cameras reading regions: a meter, a gate), every session is made at its first use and released
    when idle (EngineOptions.lazy_sessions): the detector's 19 MB are spent only if a page comes
    over HTTP, which then waits for the load once."""
    from edge_ocr import tuning
    from edge_ocr.config import default_state_dir
    from edge_ocr.engine.ocr import OcrEngine

    # threads/precision "auto" take what `edge-ocr tune` measured on this device, if it ran.
    options = tuning.apply(cfg.to_options(), tuning.load(default_state_dir()))
    engine = OcrEngine(dataclasses.replace(options, lazy_sessions=True) if not pages else options)
    log.info("engine threads=%d precisions=%s sessions=%s", engine.threads,
             ",".join("%s=%s" % kv for kv in engine.precisions.items()), "up front" if pages else "at first use")
    return engine, (engine.pack.name, engine.pack.version)


def engine_config(config: Config) -> EngineConfig:
    """``[engine]`` as the daemon builds its engine: without spinning when several pipeline
    workers run the engine at once, since the spinning threads of one run then take the cores of
    the other (two streams at once: 1.24-1.4x the time, docs/benchmarks.md)."""
    if config.pipeline.workers > 1 and config.engine.spinning:
        return dataclasses.replace(config.engine, spinning=False)
    return config.engine


def reads_pages(config: Config) -> bool:
    """Whether a source reads whole images (detection): a folder, a camera without regions, the
    fleet. Cameras that read only their regions never detect."""
    return config.fleet.enabled or any(
        not isinstance(source, CameraSourceConfig) or not source.rois for source in config.sources)


class App:
    """The running daemon. ``run()`` blocks until SIGTERM/SIGINT and returns the exit code."""

    def __init__(self, config: Config, engine_factory: EngineFactory = build_engine,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.engine_factory = engine_factory
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.stats = Stats()
        self.pipeline: Pipeline | None = None
        self.mqtt: MqttSink | None = None
        self.sources: dict[str, Source] = {}
        self._threads: list[threading.Thread] = []
        self.engine: Engine | None = None
        self.model: tuple[str, str] = ("", "")
        self.http: HttpServer | None = None
        self.guard: Guard | None = None
        self.exit_code = ExitCode.OK  # non-zero after the memory guard's hard limit: systemd restarts us
        self._start_failed = False
        self.leave_now = False  # set by shutdown when an image outlived STOP_BUDGET_S (cli.cmd_run)
        self._latest: dict[str, Result] = {}
        self._http_ocr: CachedOcr | None = None
        self._newest: Result | None = None
        self._process = psutil.Process()
        self._work = WorkMeter()  # jobs and POST /api/ocr calls: the idle trim watches them
        self._idle_trim = IdleTrim(config.guard.idle_trim_s, self._trim_idle, time.monotonic())

    # -- signals -------------------------------------------------------------------------------

    def install_signals(self) -> None:
        """SIGTERM/SIGINT → stop, SIGHUP → reload. Handlers only set events (main thread only)."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            self.install_signals()
        try:
            self.start()
        except BaseException:
            self._start_failed = True  # its own error decides the exit code; the journal names it
            self.shutdown()
            raise
        last_watchdog = last_status = time.monotonic()
        while not self.stop_event.wait(0.5):
            if self.reload_event.is_set():
                self.reload_event.clear()
                self.reload()
            now = time.monotonic()
            if self.notifier.watchdog_s and now - last_watchdog >= self.notifier.watchdog_s:
                # Pet the watchdog only while the pipeline makes progress (or idles by design).
                assert self.pipeline is not None
                if now - self.pipeline.progress < 4 * self.notifier.watchdog_s:
                    self.notifier.watchdog()
                last_watchdog = now
            if self.pipeline is not None:
                seen, busy = self._work.snapshot()
                self._idle_trim.tick(now, seen, busy or not self.pipeline.queue.empty())
            if self.notifier.enabled and now - last_status >= 10.0:
                self.notifier.status(self.status_line())
                last_status = now
        return self.shutdown()

    def start(self) -> None:
        """Load the models, open sinks and sources, start every thread, then READY=1."""
        cfg = self.config
        unfit = check_fit(cfg.guard)  # first: on a board it does not fit, loading the models may be fatal
        if unfit:
            log.warning("memory guard cannot act in time rss_hard_mb=%d limit_mb=%.0f limit=%s%s", unfit.hard_mb,
                        unfit.limit_mb, unfit.limit, " profile=%s" % unfit.profile if unfit.profile else "")
        self.notifier.status("loading models")
        engine, model = self.engine_factory(engine_config(cfg), reads_pages(cfg))
        self.engine, self.model = engine, model
        self._http_ocr = CachedOcr(engine, cfg.http.cache_entries, lambda: self.stats.inc("http_cache_hits_total"),
                                   partial(count_engine_call, self.stats))
        log.info("engine ready pack=%s version=%s", model[0], model[1])
        held_mb = psutil.Process().memory_info().rss / 2**20
        if held_mb >= cfg.guard.rss_hard_mb:
            # The guard would stop the daemon at its first look, and systemd start it again, for ever.
            raise ConfigError("guard.rss_hard_mb: %d MB is below what the daemon holds with its models loaded, %.0f MB: "
                              "it would stop at once at every start; raise it" % (cfg.guard.rss_hard_mb, held_mb))
        sinks: list[Sink] = []
        camera_cfgs = [s for s in cfg.sources if isinstance(s, CameraSourceConfig)]
        if cfg.mqtt.enabled:
            self.mqtt = MqttSink(cfg.mqtt, tuple(s.name for s in cfg.sources), self.stats, self.capture,
                                 self._source_status, {c.name: tuple(r.name for r in c.rois) for c in camera_cfgs},
                                 on_previous=self._seed_previous)
            sinks.append(self.mqtt)
        self.pipeline = Pipeline(engine, model, sinks, self.stats, self.stop_event, cfg.pipeline.queue_size,
                                 cfg.pipeline.workers, cfg.engine.low_confidence, on_result=self._remember,
                                 meter=self._work)
        # The sources exist before the broker hears of the daemon: a capture command sent at
        # `online` found none ("unknown source"). Their threads start below.
        files = ResultFiles()
        for scfg in cfg.sources:
            self.sources[scfg.name] = self._open_source(scfg, self.pipeline, files)
        if cfg.fleet.enabled:
            fleet = FleetWorker(cfg.fleet, cfg.mqtt, self.pipeline.submit, self.stats, self._on_source_status)
            self.sources[fleet.name] = fleet
        if self.mqtt is not None:
            self.mqtt.start()  # after the pipeline exists: the retained states it reads go to it
            # Files waiting at start are read after what the sources last published is known (a
            # reachable broker answers in milliseconds; an unreachable one is not waited for).
            if not self.mqtt.previous_read.wait(PREVIOUS_WAIT_S):
                log.info("mqtt retained states not read within %.0f s; first results compare with none",
                         PREVIOUS_WAIT_S)
        self.pipeline.start()
        for name, source in self.sources.items():
            thread = threading.Thread(target=source.run, args=(self.stop_event,), name="source:%s" % name, daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + SOURCES_READY_S
        for source in self.sources.values():
            # A source's first attempt is over (a folder opened, a camera tried), the stop asked
            # for meanwhile (SIGTERM during start-up: READY=1 is then never sent), or time is up.
            while not source.ready.wait(0.1) and not self.stop_event.is_set() and time.monotonic() < deadline:
                pass
        if self.stop_event.is_set():
            log.info("stop asked during start-up")
            return
        self._start_http()
        self.guard = Guard(cfg.guard, self.stop_event, self._on_guard, stats=self.stats)
        self.guard.start()
        if self.mqtt is not None:
            self.mqtt.announce()  # <p>/availability = online when systemd hears READY=1, not before
        self.notifier.ready(self.status_line())
        log.info("daemon ready sources=%s mqtt=%s", ",".join(self.sources) or "-",
                 "%s:%d" % (cfg.mqtt.host, cfg.mqtt.port) if cfg.mqtt.enabled else "disabled")

    def _open_source(self, cfg: SourceConfig, pipeline: Pipeline, files: ResultFiles) -> Source:
        if isinstance(cfg, FolderSourceConfig):
            return FolderSource(cfg, pipeline.submit, files, self.stats, self._on_source_status,
                                pipeline.engine.reading_id)
        return CameraSource(cfg, pipeline.submit, self.stats, self._on_source_status)  # its jobs are droppable

    def shutdown(self) -> int:
        """Reverse data-flow order: STOPPING=1, sources, pipeline (current job finishes), sinks."""
        code = ExitCode.OK
        self.notifier.stopping()
        self.stop_event.set()
        log.info("stopping")
        budget = time.monotonic() + STOP_BUDGET_S  # one deadline for every image being read

        def left() -> float:
            return max(0.1, budget - time.monotonic())

        def stop_http() -> None:
            nonlocal code
            if self.http is None:
                return
            try:
                if not self.http.stop(left()):
                    # A request still in the engine past the budget: as an image of the folder
                    # (below), nothing is lost (the client sees its connection closed) and the stop
                    # is a clean one for systemd; leave at once rather than unwind it.
                    self.leave_now = True
            except Exception:
                log.exception("http stop failed")
                code = ExitCode.FAILURE

        # At the memory guard's hard level the API stays up until the rest has stopped, so clients
        # get 503 not_ready (OCR refused, /readyz hard) rather than a closed port; on SIGTERM it
        # goes first, as a source of work.
        http_last = self.exit_code == ExitCode.MEMORY
        if not http_last:
            stop_http()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(max(0.1, min(deadline, budget) - time.monotonic()))
            if not thread.is_alive():
                continue
            source = self.sources.get(thread.name.removeprefix("source:"))
            if isinstance(source, CameraSource):
                # Blocked in OpenCV on a stream that stopped answering (up to its 10 s timeout):
                # it holds no file and its frames may be dropped, so the stop is still clean.
                log.warning("camera still waiting on its device, left behind source=%s", source.name)
                self.leave_now = True
                continue
            log.error("thread did not stop thread=%s", thread.name)
            code = ExitCode.FAILURE
        if self.pipeline is not None:
            try:
                if not self.pipeline.join(left()):
                    # Not a failure of the stop: nothing is lost (SIGTERM exits 0, as documented).
                    log.warning("image still being read after the stop budget, left in .processing/ for the "
                                "next start budget_s=%.0f", STOP_BUDGET_S)
                    # An image still in the engine: its file stays in .processing/ and is read
                    # again at the next start. Python's own exit would unwind that thread inside
                    # ONNX Runtime and abort (exit 134, a core dump for systemd): leave at once.
                    self.leave_now = True
            except Exception:
                log.exception("pipeline stop failed")
                code = ExitCode.FAILURE
        if http_last:
            stop_http()
        if self.mqtt is not None:
            try:
                self.mqtt.close()
            except Exception:
                log.exception("mqtt stop failed")
                code = ExitCode.FAILURE
        if self.guard is not None:
            self.guard.join(JOIN_TIMEOUT_S)
        if self.engine is not None and not self.leave_now:  # close() would wait for the image still read
            self.engine.close()
        if self.exit_code:  # the memory guard's 3 wins: systemd restarts on it, whatever else failed
            code = self.exit_code
        if self._start_failed:
            log.info("stopped after a failed start")
        else:
            log.info("stopped code=%d", code)
        return code

    # -- HTTP and the memory guard -------------------------------------------------------------

    def _start_http(self) -> None:
        cfg = self.config.http
        if not cfg.enabled:
            return
        app = make_app(self, token=cfg.token, max_upload_mb=cfg.max_upload_mb)
        self.http = HttpServer(app, bind=cfg.bind)
        self.http.start()  # which logs "http listening url=..." once

    # -- the HTTP API's side (api.ApiBackend) ------------------------------------------

    def ocr(self, image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        """POST /api/ocr: straight to the engine (thread-safe), not through the folder queue."""
        assert self._http_ocr is not None
        limit_side = self.pipeline.limit_side if self.pipeline is not None else None  # smaller at soft
        try:
            with self._work.working():
                output = self._http_ocr(image, det, rois, limit_side)
        except ImageError as exc:  # counted as the pipeline counts a bad file; answered 4xx by the API
            self.stats.inc("results_error_total")
            self.stats.inc_labelled("errors_total", exc.code)
            raise
        self.stats.inc("results_ok_total")
        return Result("http", status_for(output, self.config.engine.low_confidence), output, self.model)

    def _remember(self, result: Result) -> None:
        self._latest[result.source] = result
        self._newest = result

    def source_names(self) -> tuple[str, ...]:
        return tuple(self.sources)

    def stats_view(self) -> dict[str, Any]:
        return self.stats.view()

    def config_view(self) -> dict[str, Any]:
        view = config_to_json(self.config)  # a Config is always a JSON object, secrets masked
        assert isinstance(view, dict)
        return view

    def accepting(self) -> bool:
        return self.guard is None or self.guard.state.level is not Level.HARD

    def latest(self, source: str | None) -> Result | None:
        return self._newest if source is None else self._latest.get(source)

    def readiness(self) -> Readiness:
        return daemon_readiness(
            model=self.model,
            model_loaded=self.engine is not None,
            pipeline_running=self.pipeline is not None,
            sources={name: s.status.value for name, s in self.sources.items()},
            mqtt="disabled" if self.mqtt is None else ("connected" if self.mqtt.connected else "spooling"),
            guard=self.guard.state.to_dict() if self.guard is not None else {"level": "ok"},
        )

    def metrics_text(self) -> str:
        text = self.stats.to_prometheus()
        if self.guard is not None:
            text += self.guard.to_prometheus()
        return text

    def _on_guard(self, state: GuardState, previous: Level) -> None:
        """Soft: shed what can be shed (queued camera frames, caches). Hard: stop taking work,
        let the current job finish (folder files stay claimed in .processing/ and resume), exit
        non-zero so systemd restarts the process with fresh memory."""
        if state.level is Level.HARD:
            log.error("memory guard hard limit rss_mb=%.0f available_mb=%s: stopping for a restart",
                      state.rss_mb, state.available_mb)
            self.exit_code = ExitCode.MEMORY
            self.stop_event.set()
        elif state.level is Level.SOFT:
            dropped = self.pipeline.degrade(SOFT_DET_LIMIT_SIDE) if self.pipeline is not None else 0
            if self._http_ocr is not None:
                self._http_ocr.clear()
            # Sessions made at first need are made again when a line needs them; the free heap
            # glibc keeps after big images (docs/memory.md) goes back to the kernel.
            released = self.engine.release_idle() if self.engine is not None else ()
            gc.collect()
            trimmed = allocator.trim()
            log.warning("memory guard soft limit rss_mb=%.0f available_mb=%s dropped_frames=%d det_limit_side=%d "
                        "released_sessions=%s heap_trimmed=%s", state.rss_mb, state.available_mb, dropped,
                        SOFT_DET_LIMIT_SIDE, ",".join(released) or "none", "yes" if trimmed else "no")
        else:
            if self.pipeline is not None:
                self.pipeline.recover()
            log.info("memory guard back to ok rss_mb=%.0f (was %s)", state.rss_mb, previous.value)

    def _trim_idle(self) -> None:
        """No work for ``guard.idle_trim_s``: hand the free heap back (IdleTrim says why)."""
        gc.collect()
        debug = log.isEnabledFor(logging.DEBUG)
        before = self._rss_mb() if debug else 0.0
        trimmed = allocator.trim()
        self.stats.inc("heap_trims_total")
        if debug:
            log.debug("idle heap trim heap_trimmed=%s rss_mb_before=%.0f rss_mb=%.0f", "yes" if trimmed else "no",
                      before, self._rss_mb())

    def _rss_mb(self) -> float:
        try:
            return read_memory(self._process)[0]
        except (psutil.Error, OSError):
            return 0.0

    # -- commands and status -------------------------------------------------------------------

    def capture(self, source: str | None) -> tuple[bool, str]:
        """``<p>/cmd/capture``, ``<p>/<source>/capture``, POST /api/capture: a camera takes a frame now
        (OCR'd even if unchanged), a folder rescans. Not ok (503 ``capture_failed``, ``"ok": false``
        on ``<p>/cmd/result``) for a source that is offline: it captures when back, but not now,
        and an automation must not take the request for a capture; for all sources, ok if any is online."""
        if source is None:
            notes = ["%s: %s" % (name, s.capture_now()) for name, s in self.sources.items()]
            return any(_captures(s) for s in self.sources.values()), "; ".join(notes) or "no sources"
        if source not in self.sources:
            return False, "unknown source %r" % source
        chosen = self.sources[source]
        message = chosen.capture_now()
        return _captures(chosen), message

    def _seed_previous(self, source: str, text: str, regions: Mapping[str, str]) -> None:
        if self.pipeline is not None:
            self.pipeline.seed_previous(source, text, regions)

    def _source_status(self, name: str) -> str:
        source = self.sources.get(name)
        return (source.status if source else SourceStatus.OFFLINE).value

    def _on_source_status(self, name: str, status: SourceStatus) -> None:
        if self.mqtt is not None:
            self.mqtt.set_source_status(name, status.value)

    def status_line(self) -> str:
        """What `systemctl status` shows: the counters, and first what /readyz fails on (a source
        offline, the guard's hard level), which the counters alone made look healthy."""
        s = self.stats.snapshot()
        mqtt = "off" if self.mqtt is None else ("connected" if self.mqtt.connected else "offline")
        counters = "jobs=%d queue=%d mqtt=%s spool=%d" % (s["jobs_total"], s["queue_depth"], mqtt, s["spool_depth"])
        readiness = self.readiness()
        guard = self.guard.state.level.value if self.guard is not None else "ok"
        problems = [readiness.reason] if not readiness.ready else []
        if guard != "ok" and "guard" not in readiness.reason:
            problems.append("guard %s" % guard)
        return "; ".join(problems + [counters])

    # -- SIGHUP --------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config file; apply live keys, log the ones that need a restart. A daemon
        started on the built-in defaults looks for a file again (one written since, in
        /etc/edge-ocr, is what a SIGHUP is sent for)."""
        path = self.config.path or find_config(None)
        if path != self.config.path:
            log.info("config reload: reading %s (started on the built-in defaults)", path)
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("config reload failed, keeping the running config: %s", exc.message)
            return
        except Exception:  # a defect in reading it must not end a daemon that is running well
            log.exception("config reload failed, keeping the running config")
            return
        changed = config_diff(self.config, new)
        if not changed:
            log.info("config reload: no changes")
            return
        if "engine.pack" in changed and not _pack_exists(new.engine.pack):
            log.error("config reload failed, keeping the running config: engine.pack: no model pack %r (edge-ocr "
                      "models list)", new.engine.pack)
            return
        running = with_live(self.config, new)
        if self.pipeline is not None:
            self.pipeline.set_low_confidence(running.engine.low_confidence)
        if self.mqtt is not None:
            self.mqtt.update(running.mqtt)
        for scfg in running.sources:  # same names and types as the running sources (with_live)
            self.sources[scfg.name].update(scfg)
        self.config = dataclasses.replace(running, path=new.path)
        live = [k for k in changed if is_live(k)]
        restart = config_diff(running, new)
        if live:
            log.info("config reload applied keys=%s", ",".join(live))
        if restart:
            log.warning("config reload: restart needed for keys=%s", ",".join(restart))


def _pack_exists(name: str) -> bool:
    """Whether ``engine.pack`` names a pack this daemon could load at its next start."""
    from edge_ocr.engine.models import load_pack  # loaded already with the engine

    try:
        load_pack(name)
    except UnknownPack:
        return False
    except Exception:  # a broken pack is for the next start (and `edge-ocr check`) to say
        return True
    return True


def _captures(source: Source) -> bool:
    """Whether "capture now" takes an image from ``source`` now: online, and not the fleet (its
    jobs come from the broker)."""
    return source.status is SourceStatus.ONLINE and not isinstance(source, FleetWorker)
