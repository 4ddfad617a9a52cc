"""Run the w0sim command line in this process against a FAKE CARLA server (tests/fakes/carla_server.py), for tests that
need a separate process (signals, the reference suites):

    python -m tests.carla_server.run_with_fake [--port P] [--inject KIND:TICK] [--restart-marker PATH]
        [--tick-marker TICK:PATH] [--tick-delay S] -- eval ...

`carla.Client` is the fake's client here. `--tick-marker`: the file is made at that tick (a test waiting to interrupt a
route that is driving); `--tick-delay`: each tick takes that much longer. After the command ends (however it ends,
Ctrl-C included) the last line printed is JSON: {"exit": the command's exit code, "raised": the exception that ended
it other than an exit, or null, "clean": "" or what `assert_clean` found left, "synchronous", "tm_synchronous",
"actors": client actors left, "ticks"}."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import carla

from tests.fakes.carla_server import FakeCarlaServer, FakeClient, shared_town_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=2000)
    parser.add_argument("--inject", action="append", default=[], help="KIND:TICK, e.g. die:60")
    parser.add_argument("--restart-marker", default=None)
    parser.add_argument("--town-dir", default=None)
    parser.add_argument("--tick-marker", default=None, help="TICK:PATH")
    parser.add_argument("--tick-delay", type=float, default=0.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    # A process started from a shell that ignores SIGINT (a background job, nohup) inherits that, and Python then
    # raises no KeyboardInterrupt: the Ctrl-C tests would see the run finish instead.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    carla.Client = FakeClient
    if args.tick_marker or args.tick_delay:
        slow_ticks(args.tick_marker, args.tick_delay)
    from w0sim.cli import app

    code: object = 0
    raised = None
    with FakeCarlaServer(args.town_dir or shared_town_dir(), port=args.port).start() as server:
        for item in args.inject:
            kind, tick = item.split(":")
            server.inject(kind, at_tick=int(tick))
        if args.restart_marker:
            server.restart_marker(args.restart_marker)
        try:
            code = app(command, standalone_mode=False) or 0  # click returns the exit code then
        except SystemExit as err:
            code = err.code
        except KeyboardInterrupt:
            code, raised = 130, "KeyboardInterrupt"
        finally:
            try:
                server.assert_clean()
                clean = ""
            except AssertionError as err:
                clean = str(err)
            print(json.dumps({"exit": code if isinstance(code, int) else 1, "raised": raised, "clean": clean,
                              "synchronous": server.synchronous, "tm_synchronous": server.tm_synchronous,
                              "actors": len(server.client_actors()), "ticks": server.ticks}), flush=True)
    return code if isinstance(code, int) else 1


def slow_ticks(marker: str | None, delay_s: float) -> None:
    """Every fake server's ticks take `delay_s` longer, and `marker` ("TICK:PATH") makes PATH at tick TICK."""
    tick, path = (int(marker.split(":", 1)[0]), Path(marker.split(":", 1)[1])) if marker else (None, None)
    advance = FakeCarlaServer._advance

    def slower(self, episode):
        done = advance(self, episode)
        if self.ticks == tick:
            path.touch()
        time.sleep(delay_s)
        return done

    FakeCarlaServer._advance = slower


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
