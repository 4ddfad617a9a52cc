"""An agent from another package, registered through the `w0sim.agents` entry points, evaluated without editing w0sim:
one-shot and closed loop, on the process pool and on Ray (started by the runner itself)."""
import csv
import json
import textwrap

import pytest

from agents.base import AgentError, AgentOptions
from agents.registry import BUILTIN_AGENTS, ENTRY_POINT_GROUP, AgentSpec, registered_agents, resolve_agent
from tests.w0sim.wall_clock import without_wall_clock
from w0sim.closed_loop import evaluate_routes
from w0sim.one_shot import evaluate_split

# A privileged agent that replays the log like the built-in human agent, and a camera agent, in a package of their own.
AGENT_MODULE = '''
from agents.base import Agent, SensorConfig, require_world
from agents.human import logged_poses
from sim.state import Trajectory


class LogTwin(Agent):
    privileged = True

    def compute_trajectory(self, agent_input, world=None):
        world = require_world(self, world)
        return Trajectory(logged_poses(world.ego_log, world.step, world.ego_state, self.trajectory_sampling),
                          self.trajectory_sampling)


class ManyFrames(Agent):
    def get_sensor_config(self):
        return SensorConfig(cameras=True, history_frames=9)

    def compute_trajectory(self, agent_input, world=None):
        raise AssertionError("never driven: the runner refuses it first")
'''


@pytest.fixture
def external_package(tmp_path, monkeypatch):
    """`w0sim_ext_agents` installed as a distribution with entry points (a dist-info folder on the path), visible to
    forked pool workers (sys.path) and to Ray's workers (PYTHONPATH)."""
    site = tmp_path / "site"
    (site / "w0sim_ext_agents").mkdir(parents=True)
    (site / "w0sim_ext_agents" / "__init__.py").write_text("")
    (site / "w0sim_ext_agents" / "agents.py").write_text(textwrap.dedent(AGENT_MODULE))
    info = site / "w0sim_ext_agents-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: w0sim-ext-agents\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nlog_twin = w0sim_ext_agents.agents:LogTwin\n"
                                           "many_frames = w0sim_ext_agents.agents:ManyFrames\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    return site


def _scores(path):
    return [{k: v for k, v in row.items()} for row in csv.DictReader(path.open())]


def test_names_resolve_to_builtin_entry_point_and_module_targets(external_package):
    assert registered_agents()["log_twin"] == "w0sim_ext_agents.agents:LogTwin"
    assert set(BUILTIN_AGENTS) <= set(registered_agents())
    assert resolve_agent("pdm_closed") == BUILTIN_AGENTS["pdm_closed"]
    assert AgentSpec("w0sim_ext_agents.agents:LogTwin").build().privileged
    with pytest.raises(AgentError, match="unknown agent 'nope'.*log_twin"):
        AgentSpec("nope")
    with pytest.raises(AgentError, match="has no 'Missing'"):
        AgentSpec("w0sim_ext_agents.agents:Missing").build()
    with pytest.raises(AgentError, match="not a subclass of agents.base.Agent"):
        AgentSpec("json:JSONDecoder").build()
    with pytest.raises(AgentError, match="takes no checkpoint=/x"):
        AgentSpec("log_twin", AgentOptions(checkpoint="/x")).build()


def test_the_runner_refuses_an_agent_the_environments_cannot_serve_before_any_scene(external_package, tmp_path):
    with pytest.raises(AgentError, match="wants 9 history frames; the environments give 4"):
        evaluate_split("builtin:navtest", AgentSpec("many_frames"), tmp_path, limit=1, workers=1)
    assert not (tmp_path / "rows.jsonl").exists()


def test_a_registered_agent_is_evaluated_one_shot_and_closed_loop_on_the_pool_and_on_ray(external_package, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e .[ray])")
    # The registered twin scores exactly what the built-in human agent scores: it drives through the same interface.
    evaluate_split("builtin:navtest", AgentSpec("human"), tmp_path / "human", limit=3, workers=1)
    evaluate_split("builtin:navtest", AgentSpec("log_twin"), tmp_path / "pool", limit=3, workers=2)
    evaluate_split("builtin:navtest", AgentSpec("log_twin"), tmp_path / "ray", limit=3, workers=2, ray_address="local")
    import ray
    assert not ray.is_initialized()  # the run started Ray for itself, and shut it down when done
    human = (tmp_path / "human" / "scores.csv").read_bytes()
    assert (tmp_path / "pool" / "scores.csv").read_bytes() == human == (tmp_path / "ray" / "scores.csv").read_bytes()
    assert all(row["valid"] == "True" for row in _scores(tmp_path / "human" / "scores.csv"))

    routes = {}
    for name, agent, ray_address in [("human", "human", None), ("pool", "log_twin", None), ("ray", "log_twin", "local")]:
        routes[name] = evaluate_routes("builtin:routes", AgentSpec(agent), tmp_path / f"routes_{name}", limit=2,
                                       workers=2, ray_address=ray_address)
    assert without_wall_clock(routes["pool"]) == without_wall_clock(routes["human"]) == without_wall_clock(routes["ray"])
    records = routes["ray"]["_checkpoint"]["records"]
    assert [r["route_id"] for r in records] == [json.loads(line)["ref"] for line in
                                                sorted((tmp_path / "routes_ray" / "rows.jsonl").read_text().splitlines(),
                                                       key=lambda line: json.loads(line)["index"])]
    assert routes["ray"]["sensors"] == ["sensor.speedometer", "sensor.opendrive_map"]
    assert all(r["scores"]["score_route"] > 0 for r in records)


def test_torch_agents_take_device_and_dtype_and_say_when_the_device_is_missing(monkeypatch):
    torch = pytest.importorskip("torch")
    from sim.envs.navsim_env import NavsimSceneEnv

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AgentError, match="device 'cuda' asked for, but torch sees no CUDA device"):
        AgentSpec("drivevla_w0", AgentOptions(device="cuda")).build()
    with pytest.raises(AgentError, match="dtype 'int8' is not one of float32, bfloat16, float16"):
        AgentSpec("drivevla_w0", AgentOptions(dtype="int8")).build()
    _, info = NavsimSceneEnv(cameras=True).reset(seed=0)
    plans = {}
    for dtype in ("float32", "bfloat16"):
        agent = AgentSpec("drivevla_w0", AgentOptions(dtype=dtype)).build()
        plans[dtype] = agent.compute_trajectory(info["agent_input"]).poses
        assert next(agent.model.parameters()).dtype == getattr(torch, dtype)
    assert plans["bfloat16"].shape == (8, 3) and (plans["bfloat16"] == plans["bfloat16"]).all()
    assert not (plans["bfloat16"] == plans["float32"]).all()  # the weights really ran in bfloat16
