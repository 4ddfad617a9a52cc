"""Gymnasium environments over the simulator core; importing this package registers their ids."""
from gymnasium.envs.registration import register, registry

ENV_IDS = {
    "w0sim/NavsimScene-v0": "sim.envs.navsim_env:NavsimSceneEnv",
    "w0sim/ClosedLoop-v0": "sim.envs.closed_loop_env:ClosedLoopEnv",
    "w0sim/Carla-v0": "sim.envs.carla_env:CarlaEnv",
}

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, disable_env_checker=False)
