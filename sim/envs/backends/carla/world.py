"""One route's life on a CARLA server: the town loaded in synchronous mode, the Traffic Manager, the hero, its
sensors and the background traffic; ticks with a deadline; the snapshot; and the cleanup that leaves the server as
it was found (asynchronous, none of our actors left), after a finished route, a failure or Ctrl-C alike.

Every server call that fails (CARLA raises RuntimeError on a time-out) becomes SimulationCrashed naming what was
being done. Poses are converted at this boundary: CARLA is left-handed (y right, yaw clockwise in degrees), w0sim
right-handed (y left, heading counter-clockwise in radians)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from scenarios.opendrive.frames import carla_to_local, local_to_carla
from sim.envs.backends.carla.connection import Connection, import_carla
from sim.envs.backends.carla.sensors import SensorFrames
from sim.envs.backends.carla.settings import MAX_SUBSTEP_DELTA_S, MAX_SUBSTEPS, CarlaSettings
from sim.envs.backends.carla.watchdog import call_with_deadline
from sim.envs.backends.failures import SimulationCrashed
from sim.geometry import VehicleParameters, ego_center
from sim.render.camera import CameraConfig
from sim.state import AgentSlice, AgentType, TrafficLightStatus

T = TypeVar("T")
PROBE_S = 10.0  # how long clean-up waits for a server that timed out once to show it is alive
SPAWN_LIFT_M = 0.5  # the Leaderboard spawns the hero 0.5 m above the route to avoid ground collisions
WHEEL_BASE_SHARE = 0.587  # wheel base / length of CARLA's Lincoln MKZ 2020 (2.875 m of 4.9 m), for other heroes too
TRAFFIC_BLUEPRINTS = ("vehicle.tesla.model3", "vehicle.audi.a2", "vehicle.nissan.micra")
BLUEPRINT_OF_TYPE = {AgentType.BICYCLE: ("vehicle.bh.crossbike",), AgentType.PEDESTRIAN: ("walker.pedestrian.0001",),
                     AgentType.TRAFFIC_CONE: ("static.prop.trafficcone01",)}
# CARLA's TrafficLightState (Red 0, Yellow 1, Green 2, Off 3, Unknown 4) as w0sim's TrafficLightStatus.
LIGHT_STATUS = {0: TrafficLightStatus.RED, 1: TrafficLightStatus.YELLOW, 2: TrafficLightStatus.GREEN}


def agent_type_of(type_id: str, wheels: int | None = None) -> AgentType | None:
    """The AgentType of a CARLA actor type id, None for what is not a road user or an obstacle (sensors, lights)."""
    if type_id.startswith("vehicle."):
        return AgentType.BICYCLE if wheels == 2 else AgentType.VEHICLE
    if type_id.startswith("walker."):
        return AgentType.PEDESTRIAN
    if type_id.startswith("static.prop.trafficcone"):
        return AgentType.TRAFFIC_CONE
    if type_id.startswith("static.prop."):
        return AgentType.GENERIC_OBJECT
    return None


class TickHung(SimulationCrashed):
    """A tick that did not return within its deadline (the server is frozen, or deadlocked in synchronous mode)."""


class TownMismatchWarning(UserWarning):
    """The scene's town file and the server's town differ (lights the server does not have)."""


MKZ_EXTENT = (2.45, 1.06, 0.76)  # CARLA's vehicle.lincoln.mkz_2020 bounding box half-sizes (the Leaderboard's hero)


def hero_parameters(half_length: float, half_width: float, half_height: float) -> VehicleParameters:
    """The hero's geometry from its bounding box, the rear axle WHEEL_BASE_SHARE x length / 2 behind the box centre."""
    length = 2 * half_length
    wheel_base = WHEEL_BASE_SHARE * length
    rear = length / 2 - wheel_base / 2
    return VehicleParameters(width=2 * half_width, front_length=length - rear, rear_length=rear, wheel_base=wheel_base,
                             cog_position_from_rear_axle=wheel_base / 2, height=2 * half_height)


@dataclass
class _Actor:
    """What does not change about an actor: its id, type and box size."""

    id: int
    type_id: str
    agent_type: AgentType
    length: float
    width: float
    height: float


class CarlaWorld:
    """A route on the server. `open` loads and spawns; `tick` advances one fixed step; `close` cleans up (always)."""

    def __init__(self, connection: Connection, settings: CarlaSettings, town: str):
        self.carla = import_carla()
        self.client = connection.client
        self.settings = settings
        self.town = town
        self.world = None
        self.map = None
        self.traffic_manager = None
        self.hero = None
        self.vehicle = VehicleParameters()
        self.sensors = SensorFrames(settings.sensor_timeout_s)
        self.spawned: list = []  # every actor this route made, sensors first (destroyed in this order)
        self._sensor_actors: list = []
        self._actors: dict[int, _Actor] = {}
        self._library = None
        self._lights: list[tuple[object, str]] = []
        self.frame = -1
        self.server_dead = False
        self.tick_hung = False

    # --- calls ------------------------------------------------------------------------------------

    def call(self, what: str, call: Callable[[], T]) -> T:
        """`call()`; a CARLA RuntimeError (time-out, lost connection, refused request) becomes SimulationCrashed."""
        try:
            return call()
        except RuntimeError as err:
            if "time-out" in str(err):
                self.server_dead = True
            raise SimulationCrashed(f"{what} on the CARLA server at {self.settings.address}: {err}") from None

    # --- set-up -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Load the town in synchronous mode and set the Traffic Manager up, as the Leaderboard does per route."""
        settings = self.settings
        self.world = self.call(f"loading {self.town}", lambda: self.client.load_world(self.town, reset_settings=False))
        world_settings = self.call("reading the world settings", self.world.get_settings)
        world_settings.synchronous_mode = True
        world_settings.fixed_delta_seconds = settings.fixed_delta_s
        world_settings.deterministic_ragdolls = True
        world_settings.substepping = True
        world_settings.max_substep_delta_time = MAX_SUBSTEP_DELTA_S
        world_settings.max_substeps = MAX_SUBSTEPS
        self.call("applying synchronous settings", lambda: self.world.apply_settings(world_settings))
        self.traffic_manager = self.call("starting the Traffic Manager",
                                         lambda: self.client.get_trafficmanager(settings.traffic_manager_port))
        self.call("configuring the Traffic Manager", lambda: (
            self.traffic_manager.set_synchronous_mode(True), self.traffic_manager.set_hybrid_physics_mode(True),
            self.traffic_manager.set_random_device_seed(settings.traffic_manager_seed)))
        self.call("resetting the traffic lights", self.world.reset_all_traffic_lights)
        self.tick()
        self.map = self.call("reading the map", self.world.get_map)
        name = str(self.map.name).split("/")[-1]
        if name != self.town:
            raise SimulationCrashed(f"the CARLA server at {settings.address} runs {name}, not {self.town}, after "
                                    "loading it")
        lights = self.call("listing the traffic lights", lambda: self.world.get_actors().filter("traffic.traffic_light*"))
        self._lights = [(light, f"tl_{light.get_opendrive_id()}") for light in lights]

    def _blueprint(self, type_id: str, role: str):
        if self._library is None:  # one request per route, not one per actor spawned
            self._library = self.call("reading the blueprint library", self.world.get_blueprint_library)
        try:
            blueprint = self._library.find(type_id)
        except (RuntimeError, IndexError) as err:
            raise SimulationCrashed(f"the CARLA server at {self.settings.address} has no blueprint {type_id} ({err})") \
                from None
        if blueprint.has_attribute("role_name"):
            blueprint.set_attribute("role_name", role)
        return blueprint

    def _transform(self, x: float, y: float, heading: float, z: float):
        cx, cy, yaw = local_to_carla(x, y, heading)
        carla = self.carla
        return carla.Transform(carla.Location(x=float(cx), y=float(cy), z=float(z)), carla.Rotation(yaw=float(yaw)))

    def ground_height(self, x: float, y: float) -> float:
        """The height of the lane nearest to our (x, y)."""
        cx, cy, _ = local_to_carla(x, y, 0.0)
        waypoint = self.map.get_waypoint(self.carla.Location(x=float(cx), y=float(cy), z=0.0))
        return float(waypoint.transform.location.z) if waypoint is not None else 0.0

    def spawn_hero(self, rear_axle: np.ndarray, z: float) -> None:
        """The hero at a rear-axle pose (x, y, heading), lifted 0.5 m; a spawn collision is a simulation crash."""
        blueprint = self._blueprint(self.settings.hero_blueprint, "hero")
        x, y = ego_center(rear_axle, hero_parameters(*MKZ_EXTENT))  # its real size is known once it stands there
        hero = self.call("spawning the hero", lambda: self.world.try_spawn_actor(
            blueprint, self._transform(x, y, rear_axle[2], z + SPAWN_LIFT_M)))
        if hero is None:
            raise SimulationCrashed(f"the hero could not be spawned at the route's start ({rear_axle[0]:.1f}, "
                                    f"{rear_axle[1]:.1f}): something is in the way (spawn collision)")
        self.spawned.append(hero)
        self.hero = hero
        extent = hero.bounding_box.extent
        self.vehicle = hero_parameters(float(extent.x), float(extent.y), float(extent.z))

    def attach_cameras(self, cameras: dict[str, CameraConfig]) -> None:
        """RGB cameras on the hero matching w0sim's rig (mount relative to the rear axle, CAM_F0's field of view)."""
        carla = self.carla
        offset = self.vehicle.rear_axle_to_center
        for name, camera in cameras.items():
            blueprint = self._blueprint("sensor.camera.rgb", name)
            blueprint.set_attribute("image_size_x", str(camera.width))
            blueprint.set_attribute("image_size_y", str(camera.height))
            blueprint.set_attribute("fov", f"{math.degrees(2 * math.atan(camera.width / (2 * camera.focal))):.6f}")
            blueprint.set_attribute("sensor_tick", "0.0")
            mount = carla.Transform(carla.Location(x=camera.mount_x - offset, y=-camera.mount_y, z=camera.mount_z),
                                    carla.Rotation(pitch=-math.degrees(camera.pitch), yaw=-math.degrees(camera.yaw)))
            self._attach(blueprint, mount, self.sensors.camera_callback(name), f"camera {name}")

    def attach_event_sensors(self) -> None:
        """The collision and lane invasion sensors (data only when something happens)."""
        carla = self.carla
        for type_id, name in (("sensor.other.collision", "collision"), ("sensor.other.lane_invasion", "lane_invasion")):
            self._attach(self._blueprint(type_id, name), carla.Transform(), self.sensors.event_callback(name), name)

    def _attach(self, blueprint, transform, callback, what: str) -> None:
        sensor = self.call(f"spawning the {what} sensor",
                           lambda: self.world.spawn_actor(blueprint, transform, attach_to=self.hero))
        self.spawned.insert(0, sensor)
        self._sensor_actors.append(sensor)
        self.call(f"starting the {what} sensor", lambda: sensor.listen(callback))

    def spawn_traffic(self, agents: AgentSlice) -> int:
        """The scene's road users as background actors at their poses, vehicles on the Traffic Manager's autopilot;
        returns how many spawned (a place taken on the server is skipped, as traffic spawners do)."""
        spawned = 0
        port = self.settings.traffic_manager_port
        for k in np.flatnonzero(agents.valid).tolist():
            kind = AgentType(int(agents.agent_type[k]))
            choices = BLUEPRINT_OF_TYPE.get(kind, TRAFFIC_BLUEPRINTS if kind == AgentType.VEHICLE else ())
            if not choices:
                continue
            blueprint = self._blueprint(choices[k % len(choices)], "background")
            x, y, heading = float(agents.x[k]), float(agents.y[k]), float(agents.heading[k])
            actor = self.call("spawning background traffic", lambda: self.world.try_spawn_actor(
                blueprint, self._transform(x, y, heading, self.ground_height(x, y) + SPAWN_LIFT_M)))
            if actor is None:
                continue
            self.spawned.append(actor)
            if kind in (AgentType.VEHICLE, AgentType.BICYCLE):
                self.call("handing traffic to the Traffic Manager", lambda: actor.set_autopilot(True, port))
            spawned += 1
        return spawned

    # --- running ----------------------------------------------------------------------------------

    def apply(self, control) -> None:
        self.call("applying the hero's control", lambda: self.hero.apply_control(control.to_carla(self.carla)))

    def tick(self) -> dict[str, object]:
        """One fixed step: the tick (SimulationCrashed past `timeout_s`, whether it errs or hangs) and every camera's
        frame of it."""
        seconds = self.settings.timeout_s
        try:
            self.frame = call_with_deadline(lambda: self.call("ticking", lambda: self.world.tick(seconds)), seconds + 1.0,
                                            f"{'the first tick' if self.frame < 0 else f'the tick after frame {self.frame}'}"
                                            f" on the CARLA server at {self.settings.address}", late=TickHung)
        except TickHung:
            self.tick_hung = True
            raise
        return self.sensors.frame_data(self.frame) if self.sensors.cameras else {}

    def snapshot(self):
        return self.call("reading the snapshot", self.world.get_snapshot)

    def hero_state(self, snapshot) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(rear-axle pose (x, y, heading), velocity (forward, left), acceleration (forward, left), yaw rate rad/s)."""
        actor = snapshot.find(self.hero.id)
        if actor is None:
            raise SimulationCrashed(f"the hero (actor {self.hero.id}) is gone from the CARLA server at "
                                    f"{self.settings.address}")
        transform = actor.get_transform()
        x, y, heading = carla_to_local(transform.location.x, transform.location.y, transform.rotation.yaw)
        heading = float(heading)
        c, s = math.cos(heading), math.sin(heading)
        offset = self.vehicle.rear_axle_to_center
        pose = np.array([float(x) - offset * c, float(y) - offset * s, heading])
        v, a = actor.get_velocity(), actor.get_acceleration()
        to_ego = np.array([[c, s], [-s, c]])
        velocity = to_ego @ np.array([v.x, -v.y])
        acceleration = to_ego @ np.array([a.x, -a.y])
        return pose, velocity, acceleration, -math.radians(actor.get_angular_velocity().z)

    def others(self, snapshot) -> AgentSlice:
        """Every road user and obstacle but the hero, in this snapshot (box centres, global velocities)."""
        ids = [s.id for s in snapshot if s.id not in self._actors or self._actors[s.id] is not None]
        if any(i not in self._actors for i in ids):
            self._learn_actors()
        known = [self._actors[i] for i in ids if self._actors.get(i) is not None and i != self.hero.id]
        n = len(known)
        x, y, heading, vx, vy = (np.zeros(n) for _ in range(5))
        for k, actor in enumerate(known):
            state = snapshot.find(actor.id)
            transform, velocity = state.get_transform(), state.get_velocity()
            x[k], y[k], heading[k] = carla_to_local(transform.location.x, transform.location.y, transform.rotation.yaw)
            vx[k], vy[k] = velocity.x, -velocity.y
        return AgentSlice(x=x, y=y, heading=heading, vx=vx, vy=vy, valid=np.ones(n, dtype=bool),
                          length=np.array([a.length for a in known]), width=np.array([a.width for a in known]),
                          height=np.array([a.height for a in known]),
                          agent_type=np.array([int(a.agent_type) for a in known], dtype=np.int8),
                          track_ids=[f"carla:{a.id}" for a in known])

    def _learn_actors(self) -> None:
        for actor in self.call("listing the actors", self.world.get_actors):
            if actor.id in self._actors:
                continue
            wheels = actor.attributes.get("number_of_wheels")
            kind = agent_type_of(actor.type_id, int(wheels) if wheels else None)
            if kind is None:
                self._actors[actor.id] = None
                continue
            extent = actor.bounding_box.extent
            self._actors[actor.id] = _Actor(actor.id, actor.type_id, kind, 2 * float(extent.x), 2 * float(extent.y),
                                            2 * float(extent.z))

    def missing_lights(self, light_ids: list[str]) -> list[str]:
        """Those of `light_ids` that no traffic light on the server carries."""
        have = {name for _, name in self._lights}
        return [i for i in light_ids if i not in have]

    def light_status(self, light_ids: list[str]) -> np.ndarray:
        """(L,) the server's light states for `light_ids` ("tl_<OpenDRIVE signal id>"); UNKNOWN for ids it has none of."""
        states = {name: LIGHT_STATUS.get(int(light.get_state()), TrafficLightStatus.UNKNOWN) for light, name in self._lights}
        return np.array([int(states.get(i, TrafficLightStatus.UNKNOWN)) for i in light_ids], dtype=np.int8)

    # --- clean-up ---------------------------------------------------------------------------------

    def _answers(self) -> bool:
        """Whether the server answers a version request within PROBE_S (or the timeout, when shorter)."""
        try:
            self.client.set_timeout(min(PROBE_S, self.settings.timeout_s))
            try:
                self.client.get_server_version()
            finally:
                self.client.set_timeout(self.settings.timeout_s)
        except RuntimeError:
            return False
        return True

    def close(self) -> list[str]:
        """Stop and destroy every sensor, destroy every other actor this route made in one batch, tick once so it
        happens, and put the server back in asynchronous mode with the Traffic Manager's synchronous mode off (a
        synchronous server without a ticking client stays frozen). Returns what could not be done; after a time-out
        the rest is not tried (a dead server would make each call wait the full timeout)."""
        problems: list[str] = []
        carla = self.carla
        if self.server_dead:  # one time-out need not mean a dead server: ask once, briefly, before giving up
            self.server_dead = not self._answers()

        skipped: list[str] = []

        def attempt(what: str, call: Callable[[], object]) -> None:
            if self.server_dead:
                skipped.append(what)
                return
            try:
                call()
            except (RuntimeError, SimulationCrashed) as err:
                problems.append(f"{what}: {err}")
                if "time-out" in str(err) or "did not return" in str(err):
                    self.server_dead = True

        for sensor in self._sensor_actors:
            attempt("stopping a sensor", sensor.stop)
        if self.spawned:
            ids = [actor.id for actor in self.spawned]
            attempt("destroying our actors", lambda: self.client.apply_batch_sync(
                [carla.command.DestroyActor(i) for i in ids], False))
        if self.world is not None and not self.tick_hung:  # after a hung tick another would hang too; async mode
            attempt("ticking the destruction through",   # lets the server apply the destruction by itself
                    lambda: call_with_deadline(lambda: self.world.tick(self.settings.timeout_s),
                                               self.settings.timeout_s + 1.0, "the clean-up tick"))
        if self.world is not None:

            def asynchronous() -> None:
                world_settings = self.world.get_settings()
                world_settings.synchronous_mode = False
                world_settings.fixed_delta_seconds = None
                self.world.apply_settings(world_settings)

            attempt("restoring asynchronous mode", asynchronous)
        if self.traffic_manager is not None:
            attempt("switching the Traffic Manager's synchronous mode off", lambda: (
                self.traffic_manager.set_synchronous_mode(False), self.traffic_manager.set_hybrid_physics_mode(False)))
        self.spawned, self._sensor_actors = [], []
        if skipped:
            problems.append(f"the server did not answer, so these were skipped: {', '.join(dict.fromkeys(skipped))}")
        return problems


__all__ = ["CarlaWorld", "TickHung", "TownMismatchWarning", "agent_type_of"]
