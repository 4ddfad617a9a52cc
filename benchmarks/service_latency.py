"""Added latency per decision of a policy served over loopback gRPC (`w0sim serve` + `--agent egodriver:ADDRESS`).

What is counted: the wall time of one `compute_trajectory` call, served minus in process, on the same inputs. The
inputs are the decisions of builtin:routes' routes driven in ClosedLoop-v0 (privileged, with the 256 x 128 front
camera: 4 history frames), route after route, as a closed-loop evaluation makes them. Two agents:
- `camera_agent`: a constant-velocity agent that reads its camera frames (defined here), so what is timed is the
  wire: egomotion, route, the exact inputs with 4 x 256 x 128 x 3 frames (w0sim's extension), `drive`, the
  float64 plan;
- `pdm_closed`: a privileged planner, whose world view (objects, lights) travels each decision as well.
Each over loopback TCP and over a Unix socket; the server is `w0sim serve` in a process of its own. Calls are
interleaved (in process, served, in process, ...) so that load drift hits both alike. The last stdout line is one
JSON object of medians and 95th percentiles in milliseconds; progress goes to stderr.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import numpy as np

from agents.base import SensorConfig
from agents.constant_velocity import ConstantVelocityAgent
from sim.state import Trajectory

DECISIONS = 60
WARMUP = 3


class CameraConstantVelocityAgent(ConstantVelocityAgent):
    """Constant velocity, after reading every pixel of its camera frames (so that they must reach it)."""

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(cameras=True)

    def compute_trajectory(self, agent_input, world=None) -> Trajectory:
        if agent_input.cameras is None or agent_input.cameras.shape[1:] != (128, 256, 3):
            raise ValueError("no 256 x 128 camera frames")
        int(agent_input.cameras.sum())
        return super().compute_trajectory(agent_input, world)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def decisions(count: int) -> list:
    """(agent input, world view) of the first `count` decisions of builtin:routes, route after route, driven by
    PDM-Closed (a new route is a new session, whose first decision also sends the map)."""
    from agents.pdm_closed import PDMClosedAgent
    from scenarios.splits import resolve_split
    from sim.envs.closed_loop_env import ClosedLoopEnv

    driver, out = PDMClosedAgent(), []
    for ref in resolve_split("builtin:routes", 10):
        env = ClosedLoopEnv(scenes=[ref.load()], cameras=True, privileged=True)
        _, info = env.reset(seed=0)
        while len(out) < count:
            out.append((info["agent_input"], info["world"]))
            poses = driver.compute_trajectory(info["agent_input"], info["world"]).poses
            _, _, terminated, truncated, info = env.step(poses)
            if terminated or truncated:
                break
        if len(out) == count:
            return out
    return out


def serve(target: str, host: str):
    """`w0sim serve --agent TARGET` in a process of its own; (process, the address it prints)."""
    import re
    import subprocess

    w0sim = os.path.join(os.path.dirname(sys.executable), "w0sim")
    process = subprocess.Popen([w0sim, "serve", "--agent", target, "--host", host, "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r"serving \S+ on (\S+) \(", line)
    if not found:
        process.kill()
        raise RuntimeError(f"w0sim serve did not start: {line!r}")
    return process, found.group(1)


def measure(name: str, target: str, local, host: str, inputs: list) -> dict:
    import time

    from agents.registry import AgentSpec

    server, address = serve(target, host)
    try:
        remote = AgentSpec(f"egodriver:{address}").build()
        remote.initialize()
        in_process, served, inference = [], [], []
        for k, (agent_input, world) in enumerate(inputs):
            started = time.perf_counter()
            a = local.compute_trajectory(agent_input, world).poses
            middle = time.perf_counter()
            b = remote.compute_trajectory(agent_input, world).poses
            ended = time.perf_counter()
            if not np.array_equal(a, b):
                raise AssertionError(f"{name}: the served plan differs from the plan in process at decision {k}")
            if k >= WARMUP:
                in_process.append(middle - started)
                served.append(ended - middle)
                inference.append(remote.last_inference_s)
        remote.close()
    finally:
        server.terminate()
        server.wait()
    added = np.array(served) - np.array(in_process)
    ms = lambda values, q: round(float(np.percentile(values, q)) * 1e3, 2)  # noqa: E731
    result = {"decisions": len(served), "in_process_ms": ms(in_process, 50), "served_ms": ms(served, 50),
              "server_inference_ms": ms(inference, 50), "added_ms": ms(added, 50), "added_p95_ms": ms(added, 95)}
    log(f"{name} over {host}: {result}")
    return result


def main() -> None:
    import json
    import tempfile

    from agents.pdm_closed import PDMClosedAgent

    os.environ["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                os.environ.get("PYTHONPATH", "")])  # the server imports this module
    log(f"driving {DECISIONS} decisions of builtin:routes")
    inputs = decisions(DECISIONS)
    socket_dir = tempfile.mkdtemp()
    out = {"camera": "256x128, 4 history frames", "decisions_per_case": len(inputs) - WARMUP}
    for name, target, local in (
            ("camera_agent", "benchmarks.service_latency:CameraConstantVelocityAgent", CameraConstantVelocityAgent()),
            ("pdm_closed", "pdm_closed", PDMClosedAgent())):
        out[name] = {transport: measure(name, target, local, host, inputs) for transport, host in (
            ("tcp", "localhost"), ("unix", f"unix://{socket_dir}/policy.sock"))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
