"""Deadlines for calls that may never return (a synchronous tick is known to hang): run them in a helper thread."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from sim.envs.backends.failures import SimulationCrashed

T = TypeVar("T")


def call_with_deadline(call: Callable[[], T], seconds: float, what: str,
                       late: type[Exception] = SimulationCrashed) -> T:
    """`call()`'s result, or `late` (SimulationCrashed) when it has not returned after `seconds`; its own error is
    re-raised.

    The call runs in a daemon thread, so one that never returns is abandoned rather than joined: it cannot keep the
    process alive, and the caller goes on to record the crash and clean up. (The Leaderboard's watchdog interrupts the
    main thread instead, which a hung C++ call can swallow: leaderboard#183.)"""
    outcome: dict[str, object] = {}
    finished = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # handed to the caller, who decides
            outcome["error"] = err
        finally:
            finished.set()

    threading.Thread(target=run, name=f"w0sim-deadline: {what}", daemon=True).start()
    if not finished.wait(seconds):
        raise late(f"{what} did not return within {seconds:g} s (the watchdog's limit)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


__all__ = ["call_with_deadline"]
