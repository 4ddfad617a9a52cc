"""Physical plausibility limits of what w0sim reads: scenes (maps, ego logs, traffic) and agents' actions.

One place for every bound, so that a scene file, a scene built in code and an action are held to the same numbers,
and an error can name the bound it broke. The bounds are generous: anything real (nuPlan's UTM-like city
coordinates, CARLA's largest towns, a 5,000-agent stress scene) is far inside them; what they refuse is garbage
(NaN, inf, 1e300, a lane point a million kilometres away) that would otherwise poison scores or exhaust memory.
"""
from __future__ import annotations

# --- scenes: absolute values ------------------------------------------------------------------
MAX_ABS_COORDINATE_M = 1e7  # any x / y; nuPlan's city coordinates reach ~4.5e6 m (UTM northings)
MAX_ABS_HEADING_RAD = 1e3  # headings need not be wrapped, but a heading of 1e300 rad means nothing
MAX_SPEED_MPS = 100.0  # ego, agent and lane speed-limit magnitude (360 km/h)
MAX_ABS_DYNAMICS = 1e3  # ego accelerations (m/s^2), steering angle and rate, yaw rate and yaw acceleration
MAX_AGENT_SIZE_M = 100.0  # agent box length / width / height
MAX_SIGNAL_TIME_S = 1e6  # signal plans' phase durations and time offsets

# --- scenes: relative positions ---------------------------------------------------------------
MAX_SCENE_EXTENT_M = 5e4  # the map's bounding box (lanes, areas, stop signs); CARLA's largest towns span ~10 km
MAX_OFF_MAP_M = 5e3  # how far the ego, valid agents and the route may be from the map's bounding box (5 km)

# --- scenes: sizes ----------------------------------------------------------------------------
MAX_STEPS = 36_000  # 10 Hz log steps: one hour
MAX_TRACKS = 10_000  # agents (tracks) of a scene
MAX_TRACK_SAMPLES = 20_000_000  # steps x tracks (each agent array holds this many values)
MAX_LANES = 100_000
MAX_MAP_POINTS = 10_000_000  # lane polyline points of a map, all lanes together
MAX_SCENE_FILE_BYTES = 2 << 30  # a scene file's arrays, uncompressed (a zip bomb is refused before it is inflated)

# --- actions (trajectories in the ego frame, direct controls) ---------------------------------
MAX_TRAJECTORY_POSE_M = 1e4  # |x|, |y| of a planned pose; an ego covers at most ~MAX_SPEED_MPS x horizon
MAX_TRAJECTORY_POSES = 1_000  # poses of one trajectory (`w0sim score`; the envs fix the count)
MAX_TRAJECTORY_INTERVAL_S = 10.0  # seconds between trajectory poses
MAX_ABS_ACCELERATION = 100.0  # direct control: m/s^2 (10 g)
MAX_ABS_STEERING_RATE = 100.0  # direct control: rad/s
