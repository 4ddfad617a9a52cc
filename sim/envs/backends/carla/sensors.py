"""Sensor data matched to ticks: every camera's frame of the current tick, and the collision and lane events so far.

CARLA delivers sensor data from its own threads, in no order relative to `world.tick()`. As the Leaderboard's sensor
interface does, callbacks only queue (name, frame, data); after each tick `frame_data` takes the queue until every
camera has delivered that tick's frame. A frame that is still missing after the timeout, or a later frame of the same
camera arriving first (the server dropped it), is a simulation crash, as the Leaderboard records it.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

from sim.envs.backends.failures import SimulationCrashed


class SensorFrames:
    """The queue behind the callbacks of one route's sensors."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.cameras: list[str] = []
        self._frames: queue.Queue = queue.Queue()
        self._events: list[tuple[str, int, object]] = []
        self._lock = threading.Lock()

    def camera_callback(self, name: str):
        """The `listen` callback of camera `name` (one frame per tick is expected of it)."""
        self.cameras.append(name)
        return lambda image: self._frames.put((name, int(image.frame), image))

    def event_callback(self, name: str):
        """The `listen` callback of an event sensor (collision, lane invasion): data only when something happens."""
        def put(event) -> None:
            with self._lock:
                self._events.append((name, int(event.frame), event))
        return put

    def frame_data(self, frame: int) -> dict[str, object]:
        """{camera name: its data of `frame`}; older frames still queued are dropped."""
        found: dict[str, object] = {}
        deadline = time.monotonic() + self.timeout_s
        while len(found) < len(self.cameras):
            try:
                name, got, data = self._frames.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                missing = sorted(set(self.cameras) - set(found))
                raise SimulationCrashed(f"sensor(s) {', '.join(missing)} sent no data for frame {frame} within "
                                        f"{self.timeout_s:g} s") from None
            if got == frame:
                found[name] = data
            elif got > frame:
                raise SimulationCrashed(f"sensor {name} skipped frame {frame} (its next data is of frame {got})")
        return found

    def take_events(self, name: str, up_to_frame: int) -> list[object]:
        """The events of sensor `name` up to `up_to_frame`, in arrival order, removed from the store."""
        with self._lock:
            taken = [e for n, f, e in self._events if n == name and f <= up_to_frame]
            self._events = [item for item in self._events if not (item[0] == name and item[1] <= up_to_frame)]
        return taken

    def drain(self) -> None:
        """Forget everything queued (the warm-up ticks' data)."""
        while True:
            try:
                self._frames.get_nowait()
            except queue.Empty:
                break
        with self._lock:
            self._events.clear()


def image_rgb(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a carla.Image (raw_data is BGRA)."""
    bgra = np.frombuffer(image.raw_data, dtype=np.uint8).reshape(int(image.height), int(image.width), 4)
    return np.ascontiguousarray(bgra[:, :, 2::-1])


__all__ = ["SensorFrames", "image_rgb"]
