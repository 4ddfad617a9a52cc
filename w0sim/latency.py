"""Latency in the loop: the policy's wall time per decision, and plans held back by a fixed delay.

`DecisionTimer` times each `compute_trajectory` (in process, or over the wire, where the served policy's own share
is reported apart: `Agent.last_inference_s`). `PlanDelay` makes a closed-loop route drive each plan only `delay_s`
after the decision that made it, so a policy that needs that long to decide is scored as it would drive: until the
first plan is due the ego holds still, and a held plan is re-expressed in the ego frame of the decision that
executes it, shifted by the delay (continued at its last velocity beyond its end).
"""
from __future__ import annotations

import math
import time

import numpy as np

from agents.base import Agent
from sim.agent_input import AgentInput
from sim.geometry import global_to_local, local_to_global, principal_value
from sim.state import Trajectory, TrajectorySampling
from sim.world_view import WorldView


class DecisionTimer:
    """Wall-clock seconds of every decision an agent makes through `plan`."""

    clock = staticmethod(time.perf_counter)

    def __init__(self):
        self.wall_s: list[float] = []
        self.inference_s: list[float] = []

    def plan(self, agent: Agent, agent_input: AgentInput, world: WorldView | None) -> Trajectory:
        agent.last_inference_s = None
        started = self.clock()
        try:
            return agent.compute_trajectory(agent_input, world)
        finally:
            self.wall_s.append(self.clock() - started)
            if agent.last_inference_s is not None:
                self.inference_s.append(float(agent.last_inference_s))

    def summary(self) -> dict:
        """{"decisions", "wall_s_mean", "wall_s_p95", "wall_s_max"} and, where the policy reported its own time,
        "inference_s_mean" (a served policy's compute; the rest of the wall time is the wire)."""
        out: dict = {"decisions": len(self.wall_s)}
        if self.wall_s:
            wall = np.array(self.wall_s)
            out.update(wall_s_mean=float(wall.mean()), wall_s_p95=float(np.percentile(wall, 95)),
                       wall_s_max=float(wall.max()))
        if self.inference_s:
            out["inference_s_mean"] = float(np.mean(self.inference_s))
        return out


def latency_markdown(summaries: list[dict]) -> str:
    """One line over a run's scenes (their `DecisionTimer.summary`): the policy's wall time per decision and, for a
    served policy, its own compute; "" when no decision was timed."""
    timed = [s for s in summaries if s.get("decisions")]
    decisions = sum(s["decisions"] for s in timed)
    if not decisions:
        return ""
    mean = sum(s["wall_s_mean"] * s["decisions"] for s in timed) / decisions
    line = (f"Policy time per decision: mean {mean * 1e3:.1f} ms, max {max(s['wall_s_max'] for s in timed) * 1e3:.1f} "
            f"ms over {decisions} decision{'' if decisions == 1 else 's'}")
    served = [s for s in timed if "inference_s_mean" in s]
    if served:
        own = sum(s["inference_s_mean"] * s["decisions"] for s in served) / sum(s["decisions"] for s in served)
        line += f"; the served policy's own compute {own * 1e3:.1f} ms of it on average, the rest the wire"
    return line + ".\n"


class PlanDelay:
    """Each plan driven `delay_s` (a whole number of the plan's intervals) after the decision that made it."""

    def __init__(self, delay_s: float, sampling: TrajectorySampling = TrajectorySampling()):
        steps = delay_s / sampling.interval
        if delay_s < 0 or not math.isfinite(delay_s) or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"plan delay {delay_s!r} s must be a whole number of decisions ({sampling.interval:g} s "
                             f"each), 0 or more")
        self.steps, self.sampling = round(steps), sampling
        self._held: list[np.ndarray] = []  # global poses of the plans not yet driven, oldest first

    def action(self, poses: np.ndarray, ego_state: np.ndarray) -> np.ndarray:
        """The trajectory to drive now (current ego frame), given the plan just made (`poses`, same frame)."""
        if self.steps == 0:
            return poses
        self._held.append(local_to_global(np.asarray(poses, dtype=np.float64), ego_state[:3]))
        if len(self._held) <= self.steps:
            return np.zeros((self.sampling.num_poses, 3))  # no plan due yet: hold still
        old = self._held.pop(0)
        return global_to_local(shift(old, self.steps), ego_state[:3])


def check_plan_delay(delay_s: float) -> None:
    """A RunError (`w0sim.runner`) naming --plan-delay for a delay `PlanDelay` refuses."""
    from w0sim.runner import RunError

    try:
        PlanDelay(delay_s)
    except ValueError as err:
        raise RunError(f"--plan-delay: {err}") from None


def shift(poses: np.ndarray, steps: int) -> np.ndarray:
    """Poses i + `steps` of a plan (pose i at (i + 1) intervals), continued at the last pose-to-pose step beyond its
    end."""
    n = len(poses)
    step = poses[-1] - poses[-2] if n > 1 else np.zeros(3)
    step[2] = principal_value(step[2])  # a heading that crosses +-pi turns by the short way
    beyond = poses[-1] + step * np.arange(1, steps + 1)[:, None]
    return np.concatenate([poses, beyond])[steps: steps + n]


__all__ = ["DecisionTimer", "PlanDelay", "check_plan_delay", "latency_markdown", "shift"]
