"""Which agent a name means: the built-in names, `package.module:Class` specs, and the `w0sim.agents` entry points.

A policy in another package becomes `w0sim eval --agent NAME` by declaring, in its own pyproject.toml,
`[project.entry-points."w0sim.agents"] NAME = "package.module:AgentClass"`. The name is resolved once, in the
process that starts a run, to its `module:Class` target; workers import that target and build their own agent.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points

from agents.base import Agent, AgentError, AgentOptions

ENTRY_POINT_GROUP = "w0sim.agents"
SERVED_PREFIX = "egodriver:"  # egodriver:HOST:PORT or egodriver:unix:///PATH: a policy behind an egodriver server
SERVED_AGENT = "agents.egodriver:EgodriverAgent"
BUILTIN_AGENTS = {
    "constant_velocity": "agents.constant_velocity:ConstantVelocityAgent",
    "human": "agents.human:HumanAgent",
    "pdm_closed": "agents.pdm_closed:PDMClosedAgent",
    "pdm_lane_following": "agents.lane_following_pdm:LaneFollowingPDMAgent",
    "drivevla_w0": "agents.drivevla_w0:DriveVLAW0Agent",
    "route_follower": "agents.route_follower:RouteFollowerAgent",
}


def registered_agents() -> dict[str, str]:
    """Agent name -> `module:Class` target: the built-in agents, then those other packages register."""
    found = dict(BUILTIN_AGENTS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def resolve_agent(name: str) -> str:
    """The `module:Class` target of an agent name (a registered name, `egodriver:ADDRESS` for a served policy, or a
    `module:Class` spec itself)."""
    if name.startswith(SERVED_PREFIX):
        return SERVED_AGENT
    if ":" in name:
        return name
    known = registered_agents()
    if name not in known:
        raise AgentError(f"unknown agent {name!r}; choose from {', '.join(known)} or give package.module:Class")
    return known[name]


def load_agent_class(target: str) -> type[Agent]:
    """Import `module:Class` and check that it is an `agents.base.Agent`."""
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise AgentError(f"agent {target!r}: expected a registered name or package.module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except AttributeError:
        raise AgentError(f"agent {target}: module {module_name} has no {class_name!r}") from None
    except Exception as err:  # ImportError, or whatever the module raised while it was imported
        raise AgentError(f"agent {target}: cannot import {module_name} ({type(err).__name__}: {err})") from err
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise AgentError(f"agent {target} is not a subclass of agents.base.Agent")
    if inspect.isabstract(cls):
        raise AgentError(f"agent {target} is abstract: it does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    return cls


@dataclass(frozen=True)
class AgentSpec:
    """An agent to build in every worker: its name as given, the build options, and its resolved target."""

    name: str
    options: AgentOptions = AgentOptions()
    target: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.target:
            object.__setattr__(self, "target", resolve_agent(self.name))
        if self.name.startswith(SERVED_PREFIX):
            object.__setattr__(self, "options", replace(self.options, service=self.name.removeprefix(SERVED_PREFIX)))

    def build(self) -> Agent:
        """A new agent (not yet initialised)."""
        return load_agent_class(self.target).from_options(self.options)


__all__ = ["BUILTIN_AGENTS", "ENTRY_POINT_GROUP", "SERVED_AGENT", "SERVED_PREFIX", "AgentSpec", "load_agent_class",
           "registered_agents", "resolve_agent"]
