"""Parse an OpenDRIVE text once in a child process, where a crash of the carla map library cannot take the run down.

`check_opendrive` refuses what is known to crash `carla.Map`; the library has more ways to fail than that check
can foresee (it dereferences whatever the file names). So before a town is parsed in this process, a probe process
runs everything w0sim does with it (`carla.Map`, the topology and lane sampling of `load_town`, the signals, the
Leaderboard route planner's graph) on the same text. The probe ending by a signal (a segmentation fault) or running
past PROBE_TIMEOUT_S becomes an OpenDriveError; a Python exception there is left to this process, which meets it
again and reports it with its own message. Each text is probed once per process (verdicts cached by SHA-256):
this costs a Python start (~0.3 s) and one load of the town per process.

Run as `python -m scenarios.opendrive.probe` with the OpenDRIVE text on stdin.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from scenarios.opendrive.validate import OpenDriveError

PROBE_TIMEOUT_S = 60.0  # a town loads in about a second (Python start included); this leaves room for a busy machine
_verdicts: dict[str, str | None] = {}  # text digest -> None (survived) or the error message


def probe_opendrive(text: str, source: str) -> None:
    """Raise OpenDriveError (naming `source`) when a probe process parsing `text` crashes or hangs."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    if digest not in _verdicts:
        _verdicts[digest] = _run_probe(text)
    if (reason := _verdicts[digest]) is not None:
        raise OpenDriveError(f"{source}: {reason}")


def _run_probe(text: str) -> str | None:
    root = str(Path(__file__).resolve().parents[2])  # this checkout: the probe runs the same code
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    try:
        done = subprocess.run([sys.executable, "-m", "scenarios.opendrive.probe"], input=text.encode("utf-8"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the carla map library did not finish parsing it within {PROBE_TIMEOUT_S:g} s"
    except OSError as err:
        return f"cannot start a process to parse it safely ({err})"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return (f"the carla map library crashed ({name}) parsing it: the file is OpenDRIVE that CARLA cannot read "
                "(a probe process took the crash)")
    lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return f"parsing it failed in a probe process (exit {done.returncode}: {lines[-1] if lines else 'no message'})"


def _main() -> None:
    """The probe: load the town from stdin as `load_town` would, build the route planner's graph, exit 0."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash here is expected: leave no core file
    except (ImportError, ValueError, OSError):
        pass
    text = sys.stdin.buffer.read().decode("utf-8")
    from scenarios.carla_route_planner import planner_for
    from scenarios.leaderboard import DENSE_STEP_M
    from scenarios.opendrive.town import carla_map_of, town_of

    try:
        carla_map = carla_map_of(text, "probe", "probe")
        town_of(carla_map, "probe", "probe")
        planner_for(carla_map, DENSE_STEP_M)
    except Exception:  # noqa: BLE001 - a clean error: the parent meets it again and reports it
        pass
    sys.exit(0)


if __name__ == "__main__":
    _main()


__all__ = ["PROBE_TIMEOUT_S", "probe_opendrive"]
