"""A stand-in for Raspberry Pi OS's ``picamera2`` module, placed in ``sys.modules`` by tests.

``CameraBus`` is what is plugged in; the ``Picamera2`` class of ``bus.module()`` behaves and
fails like the real one: ``Picamera2()`` raises IndexError with no camera and RuntimeError
when another process holds it; ``configure`` needs a stopped camera; ``start`` needs a
configuration; ``set_controls`` refuses controls the sensor does not advertise;
``capture_array`` returns a copy of the current frame (RGB888 = B, G, R in memory), or with
``wait=False`` a job that ``wait(job, timeout)`` completes (TimeoutError past ``timeout`` while
the bus is ``stalled``, as a sensor whose frontend stopped delivering frames).
"""

from __future__ import annotations

import threading
import types
from typing import Any

import numpy as np

AF_CONTROLS = {"AfMode": (0, 2, 0), "AfTrigger": (0, 1, 0), "LensPosition": (0.0, 32.0, 1.0)}
BASE_CONTROLS = {"ExposureTime": (1, 66666, 20000), "AnalogueGain": (1.0, 16.0, 1.0)}


class CameraBus:
    """The hardware the fake sees: ``state`` is ``present``, ``missing`` or ``busy``;
    ``unplugged`` makes a created camera fail to start and capture."""

    def __init__(self, state: str = "present", autofocus: bool = True,
                 frame: np.ndarray | None = None) -> None:
        self.state = state
        self.autofocus = autofocus
        self.unplugged = False
        self.stalled = False  # captures never complete (picamera2's wait times out)
        self.frame = frame if frame is not None else np.full((480, 640, 3), 255, dtype=np.uint8)
        self.created = 0  # Picamera2 objects successfully constructed
        self.attempts = 0  # constructor calls, failed ones included
        self.closed = 0
        self.captures = 0
        self.controls: list[dict[str, Any]] = []
        self.configs: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def set_frame(self, frame: np.ndarray) -> None:
        with self.lock:
            self.frame = frame

    def module(self) -> types.ModuleType:
        bus = self

        class Picamera2:
            def __init__(self, camera_num: int = 0) -> None:
                bus.attempts += 1
                if bus.state == "missing" or camera_num != 0:
                    raise IndexError("list index out of range")
                if bus.state == "busy":
                    raise RuntimeError("Failed to acquire camera: Device or resource busy")
                bus.created += 1
                self.started = False
                self.closed = False
                self.config: dict[str, Any] | None = None

            @staticmethod
            def global_camera_info() -> list[dict[str, Any]]:
                return [] if bus.state == "missing" else [{"Model": "imx708", "Location": 2, "Num": 0}]

            @property
            def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
                return {**BASE_CONTROLS, **(AF_CONTROLS if bus.autofocus else {})}

            def create_still_configuration(self, main: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
                return {"use_case": "still", "main": {"format": "BGR888", "size": (4608, 2592), **(main or {})},
                        "buffer_count": 1, **kw}

            def configure(self, config: dict[str, Any]) -> None:
                self._check_open()
                if self.started:
                    raise RuntimeError("Camera must be stopped before configuring")
                self.config = config
                bus.configs.append(config)

            def set_controls(self, controls: dict[str, Any]) -> None:
                for name in controls:
                    if name not in self.camera_controls:
                        raise RuntimeError("Control %s is not advertised by libcamera" % name)
                bus.controls.append(dict(controls))

            def start(self) -> None:
                self._check_open()
                if self.config is None:
                    raise RuntimeError("Camera has not been configured")
                if bus.unplugged:
                    raise RuntimeError("Failed to start camera: No such device")
                self.started = True

            def autofocus_cycle(self) -> bool:
                return True

            def capture_array(self, name: str = "main", wait: bool | None = None) -> Any:
                if not self.started:
                    raise RuntimeError("Camera is not running")
                if wait is False:
                    return ("job", self)
                return self._capture()

            def wait(self, job: Any, timeout: float | None = None) -> np.ndarray:
                if bus.stalled:
                    threading.Event().wait(timeout if timeout is not None else 3600.0)
                    raise TimeoutError()
                return self._capture()

            def _capture(self) -> np.ndarray:
                if bus.unplugged:
                    raise RuntimeError("Camera frontend has timed out!")
                with bus.lock:
                    bus.captures += 1
                    return bus.frame.copy()

            def stop(self) -> None:
                self.started = False

            def close(self) -> None:
                if not self.closed:
                    self.stop()
                    self.closed = True
                    bus.closed += 1

            def _check_open(self) -> None:
                if self.closed:
                    raise RuntimeError("Camera is closed")

        module = types.ModuleType("picamera2")
        module.Picamera2 = Picamera2  # type: ignore[attr-defined]
        return module
