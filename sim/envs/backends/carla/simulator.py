"""A scene's route driven on a CARLA server, behind the embedded simulator's interface (`BuiltinSimulator`), so that
`ClosedLoopEnv`, its Leaderboard monitor and the route records are the same for both backends.

The server moves the world; w0sim reads it back every 0.1 s step: the hero's state from the snapshot, the other
actors, the lights by their OpenDRIVE ids, and collisions from the collision sensor (with the actor hit and its CARLA
type). Route progress, red lights run, stop signs run and off-road are judged on the scene's map of the same town, as
for the embedded backend.
"""
from __future__ import annotations

import warnings

import numpy as np

from sim.envs.backends.builtin import episode_route
from sim.envs.backends.carla.connection import ClientFactory, connect
from sim.envs.backends.carla.control import MAX_WHEEL_ANGLE_RAD, Control, DirectController, TrajectoryController
from sim.envs.backends.carla.sensors import image_rgb
from sim.envs.backends.carla.settings import CarlaSettings
from sim.envs.backends.carla.world import CarlaWorld, TownMismatchWarning, agent_type_of
from sim.envs.backends.failures import SimulationCrashed
from sim.envs.events import Collision, MapCriteria, StepEvents
from sim.geometry import ego_center, ego_corners, local_to_global
from sim.render.camera import CameraConfig
from sim.scene import STEP_S, Scene
from sim.state import AgentSlice, AgentType, ego_state

FRONT_CAMERA = "front"


class CarlaSimulator:
    """One scene's route on the server, stepped at 0.1 s (`settings.ticks_per_step` ticks). `close` always cleans up.

    The scene must come from a CARLA town (`metadata["town"]`): its map, route, lights' ids and start are the town's.
    Its road users at the current frame become background traffic on the Traffic Manager."""

    def __init__(self, scene: Scene, settings: CarlaSettings, camera: CameraConfig | None = None,
                 client_factory: ClientFactory | None = None):
        town = scene.metadata.get("town")
        if not town:
            raise ValueError(f"scene {scene.token} is not from a CARLA town (no metadata['town']); the CARLA backend "
                             "drives Leaderboard routes (carla:ROUTES.xml, scenarios.route_scenes.route_scene)")
        self.scene = scene
        self.settings = settings
        self.step_index = scene.current_index
        self.connection = connect(settings, client_factory)
        self.world = CarlaWorld(self.connection, settings, town)
        self.trajectory = TrajectoryController()
        self.direct = DirectController()
        self.image: np.ndarray | None = None
        self.first_image: np.ndarray | None = None
        self.spawned_traffic = 0
        self.lane_invasions = 0
        self._last_steer = 0.0
        self._planned = False
        try:
            self._open(camera)
        except BaseException:
            self.close()
            raise

    def _open(self, camera: CameraConfig | None) -> None:
        scene, world = self.scene, self.world
        world.open()
        missing = world.missing_lights(scene.light_ids)
        if missing:
            warnings.warn(f"{len(missing)} of the {len(scene.light_ids)} traffic lights of {scene.metadata['town']}'s town "
                          f"file are not on the CARLA server at {self.settings.address} (e.g. {missing[0]}): red lights "
                          "there are not judged; use the .xodr files of the server's release (--town-dir)",
                          TownMismatchWarning, stacklevel=2)
        start = scene.initial_ego_state
        z = float(scene.route_points[0, 2]) if scene.route_points is not None else world.ground_height(start[0], start[1])
        world.spawn_hero(start[:3], z)
        self.vehicle = world.vehicle
        if camera is not None:
            world.attach_cameras({FRONT_CAMERA: camera})
        world.attach_event_sensors()
        if self.settings.background_traffic:
            self.spawned_traffic = world.spawn_traffic(scene.agents.at(scene.current_index))
        world.apply(Control(brake=1.0))  # the hero stands while the sensors warm up
        for _ in range(max(self.settings.warmup_ticks, 1)):
            frames = world.tick()
        world.sensors.drain()
        self._read(frames)
        self.first_image = self.image
        self.ego_log = [s.copy() for s in scene.ego_log[: scene.current_index]] + [self.ego.copy()]
        self.route = episode_route(scene)
        self.route.reset(ego_center(self.ego, self.vehicle))
        self.criteria = MapCriteria(scene.map, scene.light_ids, self.route)
        self.events: list[StepEvents] = []

    # --- state ---------------------------------------------------------------------------------

    def _read(self, frames: dict[str, object], everything: bool = True) -> None:
        """The hero's state of the last tick; with `everything` (at the end of a 0.1 s step) also the others, the lights
        and the camera image."""
        snapshot = self.world.snapshot()
        pose, velocity, acceleration, yaw_rate = self.world.hero_state(snapshot)
        steering = -self._last_steer * MAX_WHEEL_ANGLE_RAD
        self.ego = ego_state(pose[0], pose[1], pose[2], velocity[0], velocity[1], acceleration[0], acceleration[1],
                             steering)
        self.ego[9] = yaw_rate
        if not everything:
            return
        self._agents = self.world.others(snapshot)
        self._lights = self.world.light_status(self.scene.light_ids)
        if FRONT_CAMERA in frames:
            self.image = image_rgb(frames[FRONT_CAMERA])

    @property
    def time_s(self) -> float:
        return (self.step_index - self.scene.current_index) * STEP_S

    def agents(self) -> AgentSlice:
        return self._agents

    def light_status(self, step: int | None = None) -> np.ndarray:
        """The server's light states now (the server keeps no history for us to read)."""
        return self._lights

    # --- stepping ------------------------------------------------------------------------------

    def plan(self, local_poses: np.ndarray, interval: float) -> None:
        """A trajectory (N, 3) in the current ego frame for the PID controller to follow."""
        self.trajectory.set_plan(local_to_global(np.asarray(local_poses, dtype=np.float64), self.ego[:3]), interval)
        self._planned = True

    def step(self, control: np.ndarray | None = None) -> StepEvents:
        """Advance 0.1 s. `control` = (acceleration, steering rate) overrides the plan."""
        if control is None and not self._planned:
            raise RuntimeError("CarlaSimulator.step: call plan() first or pass a control")
        world = self.world
        previous = self.ego
        ticks = self.settings.ticks_per_step
        for tick in range(ticks):
            if control is None:
                command = self.trajectory.control(self.ego[:3], float(self.ego[3]))
            else:
                command = self.direct.control(control, self.settings.fixed_delta_s)
            self._last_steer = command.steer
            world.apply(command)
            self._read(world.tick(), everything=tick == ticks - 1)
        self.step_index += 1
        self.ego_log.append(self.ego.copy())
        events = StepEvents(time_s=self.time_s)
        self._detect(previous, events)
        self.events.append(events)
        return events

    def _detect(self, previous: np.ndarray, events: StepEvents) -> None:
        vehicle = self.vehicle
        speed = float(self.ego[3])
        for event in self.world.sensors.take_events("collision", self.world.frame):
            other = event.other_actor
            kind = agent_type_of(other.type_id, _wheels(other))
            name = (AgentType.GENERIC_OBJECT if kind is None else kind).name.lower()  # VEHICLE is 0: not `or`
            events.collisions.append(Collision(f"carla:{other.id}", name, speed, type_id=str(other.type_id),
                                               actor_id=int(other.id)))
        self.lane_invasions += len(self.world.sensors.take_events("lane_invasion", self.world.frame))
        self.criteria.judge(events, previous, self.ego, ego_corners(self.ego, vehicle), self._lights, vehicle)

    def camera_frame(self, step: int) -> np.ndarray:
        """The front camera's image at a log step: the current tick's, or (history before the route started) the
        first image after the warm-up, the hero standing where the scene's log has it standing."""
        if self.image is None:
            raise SimulationCrashed("the CARLA backend has no camera (the environment was made with cameras=False)")
        if step == self.step_index:
            return self.image
        if step <= self.scene.current_index:
            return self.first_image
        raise RuntimeError(f"camera frame of step {step} was not kept (now {self.step_index})")

    def close(self) -> list[str]:
        """Destroy what this route made and restore asynchronous mode (`CarlaWorld.close`); what failed, if anything."""
        world, self.world = getattr(self, "world", None), None
        return world.close() if world is not None else []


def _wheels(actor) -> int | None:
    wheels = getattr(actor, "attributes", {}).get("number_of_wheels")
    return int(wheels) if wheels else None


__all__ = ["CarlaSimulator", "FRONT_CAMERA"]
