"""w0sim's own cost per step of the CARLA backend: what `w0sim/Carla-v0` adds to the server's ticks.

What is counted: the wall time of `env.step` (one 0.5 s decision: 5 steps of 0.1 s, each 2 ticks of 0.05 s) split
into the time spent waiting on the server (the tick calls with their camera frames, and the snapshots) and the rest,
w0sim's own work (control, reading the snapshot into arrays, lights, events, the Leaderboard criteria, the agent's
inputs and the 256 x 128 camera frame). The route is devtest's route 0 (Town01) with its background traffic (the
count of other vehicles is reported); the agent plans along the route at 8 m/s (about 1 ms, not counted: it runs
between steps). Without --host the server is the FAKE one of the tests (tests/fakes/carla_server.py), whose own time
says nothing about CARLA's; with --host HOST [--port P] a real server. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default=None, help="a real CARLA server (default: the tests' fake server)")
    parser.add_argument("--port", type=int, default=2000)
    parser.add_argument("--decisions", type=int, default=120)
    args = parser.parse_args()

    from sim.envs.backends.carla.settings import CarlaSettings
    from sim.envs.backends.carla.world import CarlaWorld
    from sim.envs.carla_env import CarlaEnv
    from tests.carla_server.agents import RouteTracerAgent
    from tests.conftest import shared_dir

    fixtures = shared_dir() / "fixtures" / "carla"
    waited = {"s": 0.0}
    for name in ("tick", "snapshot"):
        original = getattr(CarlaWorld, name)

        def timed(self, *a, _original=original, **k):
            started = time.perf_counter()
            try:
                return _original(self, *a, **k)
            finally:
                waited["s"] += time.perf_counter() - started

        setattr(CarlaWorld, name, timed)

    factory, server = None, None
    if args.host is None:
        from tests.fakes.carla_server import FakeCarlaServer, FakeClient

        server = FakeCarlaServer(fixtures / "maps", port=args.port).start()
        factory = FakeClient
    settings = CarlaSettings(host=args.host or "localhost", port=args.port, timeout_s=60.0)
    env = CarlaEnv(split=f"carla:{fixtures / 'routes' / 'routes_devtest.xml'}", town_dir=fixtures / "maps",
                   carla=settings, client_factory=factory, privileged=True)
    agent = RouteTracerAgent()
    try:
        _, info = env.reset(seed=0, options={"scene_index": 0})
        vehicles = int((env.unwrapped.sim.agents().agent_type == 0).sum())
        totals, waits = [], []
        for _ in range(args.decisions):
            trajectory = agent.compute_trajectory(info["agent_input"], info["world"])
            waited["s"] = 0.0
            started = time.perf_counter()
            _, _, terminated, truncated, info = env.step(trajectory.poses)
            totals.append(time.perf_counter() - started)
            waits.append(waited["s"])
            if terminated or truncated:
                break
    finally:
        env.close()
        if server is not None:
            server.stop()
    own = [(t - w) * 1e3 / 5 for t, w in zip(totals, waits)]
    print(json.dumps({
        "server": "fake (tests/fakes/carla_server.py)" if args.host is None else f"{args.host}:{args.port}",
        "route": "devtest RouteScenario_0 (Town01)", "other_vehicles": vehicles, "decisions": len(totals),
        "ticks_per_step": settings.ticks_per_step, "camera": "256x128",
        "w0sim_ms_per_step_median": round(statistics.median(own), 2),
        "w0sim_ms_per_step_p95": round(sorted(own)[int(0.95 * (len(own) - 1))], 2),
        "server_ms_per_step_median": round(statistics.median(waits) * 1e3 / 5, 2),
    }))


if __name__ == "__main__":
    main()
