"""Traffic behaviours in batch: signal plans, lane-graph paths, IDM agents, crosswalk walkers, log replay."""
from sim.traffic.idm import IDMParameters, IDMTraffic, Obstacles
from sim.traffic.paths import PATH_STEP_M, AgentPaths
from sim.traffic.replay import attach_to_lanes, constant_velocity, log_replay
from sim.traffic.signals import SignalPlan, light_status_table
from sim.traffic.walkers import CrosswalkWalkers

__all__ = [
    "PATH_STEP_M", "AgentPaths", "CrosswalkWalkers", "IDMParameters", "IDMTraffic", "Obstacles", "SignalPlan",
    "attach_to_lanes", "constant_velocity", "light_status_table", "log_replay",
]
