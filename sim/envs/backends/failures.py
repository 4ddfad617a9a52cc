"""How a simulator backend says that the simulation, not the agent, failed (the Leaderboard's "Simulation crashed")."""
from __future__ import annotations


class SimulationCrashed(RuntimeError):
    """The simulator stopped answering or misbehaved (a tick or a sensor past its deadline, a dead server, a town that
    would not load, a hero that could not be spawned). The route ends "Failed - Simulation crashed" and is driven again
    by the next run into the folder, as the Leaderboard re-runs a crashed route on --resume."""


class SimulatorUnavailable(SimulationCrashed):
    """No simulator answers at the configured address within the timeout."""
