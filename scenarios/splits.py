"""Named scene sets: the built-in splits (fixed seeds and sizes, the same on every machine), directories of scene
files, NAVSIM log splits (`navsim:NAME`: the logs of `<navsim_logs>/NAME/` sliced as NAVSIM's SceneFilter does)
and CARLA Leaderboard routes (`carla:ROUTES.xml`: closed-loop route scenes on the towns of `town_dir`)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from scenarios.generator import FAMILIES, GeneratorConfig, generate_scene, scene_specs
from scenarios.generator.generate import scene_token
from scenarios.log_frames import FRAME_STRIDE, frame_token
from scenarios.scene import load_scene
from scenarios.scene_filter import SceneFilter, SceneFilterError
from sim.scene import Scene


@dataclass(frozen=True)
class BuiltinSplit:
    """Generated scenes: `size` tokens, `frames_per_log` consecutive 2 Hz frames of each generated log
    (`scene_specs(size // frames_per_log, seed)`: log i is family i mod 5 with seed seed * 1000003 + i), as a
    NAVSIM split lists consecutive frames of its logs (which is what makes v2.2's two-frame comfort defined)."""

    name: str
    seed: int
    size: int
    kind: str  # "one_shot" (NAVSIM-style scoring) or "closed_loop" (Leaderboard-style routes)
    description: str
    frames_per_log: int = 1


EARLIER_WINDOWS_KEY = "metric_cache_earlier_windows"  # scene metadata: {"log", "nuplan_maps", "starts"}
BUILTIN_SPLITS = {
    split.name: split for split in (
        BuiltinSplit("navtrain", 1, 100_000, "one_shot", "training scenes for data collection"),
        BuiltinSplit("navtest", 2, 500, "one_shot", "held-out test scenes: 250 logs x 2 consecutive frames, 100 per "
                     "family", frames_per_log=2),
        BuiltinSplit("routes", 3, 50, "closed_loop", "closed-loop routes, 10 per family"),
    )
}


class SplitError(ValueError):
    """A split name or directory cannot be resolved: the message says what was given and what exists."""


@dataclass(frozen=True)
class SceneRef:
    """One scene of a split: generated from (family, seed), read from a scene file, or a window of a NAVSIM log
    (`navsim_log` from frame `window_start`, its map under `nuplan_maps`, images under `sensor_blobs`), or a
    Leaderboard route (`route_id` of `route_file`, its town read from `town_dir`, traffic drawn from `seed`).
    A generated scene's `frame` > 0 is its log `frame` 2 Hz frames after the generated current frame; its
    `repetition` k > 0 redraws the other road users and signal phases from (seed, k) (`generate_scene`).
    A NAVSIM log window's `earlier_windows` are the starts of the split's windows of that log before it, the tokens
    NAVSIM's metric caching plans before this one with the same PDM-Closed planner (`sim.envs.scene_scoring`)."""

    token: str
    family: str | None = None
    seed: int | None = None
    path: Path | None = None
    navsim_log: Path | None = None
    window_start: int = 0
    nuplan_maps: Path | None = None
    sensor_blobs: Path | None = None
    route_file: Path | None = None
    route_id: str | None = None
    town_dir: Path | None = None
    frame: int = 0
    repetition: int = 0
    earlier_windows: tuple[int, ...] = ()

    @property
    def log_frame(self) -> tuple[str, int]:
        """(log, frame index in it): scenes of one log at consecutive frames are NAVSIM's adjacent frames."""
        if self.navsim_log is not None:
            return str(self.navsim_log), self.window_start
        if self.family is not None and self.seed is not None and self.path is None and self.route_file is None:
            return f"generated/{self.family}/{self.seed}", self.frame
        return self.token, 0

    def load(self) -> Scene:
        if self.route_file is not None:
            from scenarios.leaderboard import RouteFileError, read_routes, town_for
            from scenarios.route_scenes import route_scene

            route = next((r for r in read_routes(self.route_file) if r.route_id == self.route_id), None)
            if route is None:
                raise RouteFileError(f"{self.route_file}: route {self.route_id} is not in the file any more")
            return route_scene(route, town_for(str(self.town_dir), route.town), self.seed or 0)
        if self.navsim_log is not None:
            from scenarios.navsim_logs import load_log_scene

            scene = load_log_scene(self.navsim_log, self.window_start, self.nuplan_maps, self.sensor_blobs)
            if not self.earlier_windows:
                return scene
            earlier = {"log": str(self.navsim_log), "nuplan_maps": str(self.nuplan_maps),
                       "starts": list(self.earlier_windows)}
            return replace(scene, metadata={**scene.metadata, EARLIER_WINDOWS_KEY: earlier})
        if self.path is not None:
            return load_scene(self.path)
        scene = generate_scene(self.family, self.seed, repetition=self.repetition)
        if not self.frame:
            return scene
        step = scene.current_index + FRAME_STRIDE * self.frame
        return replace(scene, token=frame_token(scene.token, step), current_index=step,
                       metadata={**scene.metadata, "log_token": scene.token})


def repeated(ref: SceneRef, repetition: int, token: str) -> SceneRef:
    """Repetition `repetition` of the route `ref`, named `token`: a Leaderboard route with traffic and signal
    phases drawn from seed `repetition`, a generated scene with its other road users and signal phases redrawn
    (`generate_scene`); repetition 0 is the route as the split has it. Scene files and NAVSIM logs hold fixed traffic,
    so they have no other repetition (SplitError)."""
    if ref.route_file is not None:
        return replace(ref, token=token, seed=repetition, repetition=repetition)
    if repetition == 0:
        return replace(ref, token=token)
    if ref.path is None and ref.navsim_log is None and ref.family is not None and ref.seed is not None:
        return replace(ref, token=token, repetition=repetition)
    raise SplitError(f"scene {ref.token} has fixed traffic (a scene file or a NAVSIM log): it has no repetition "
                     f"{repetition}; repetitions need carla: routes or built-in (generated) scenes")


def builtin_split(name: str) -> BuiltinSplit:
    if name not in BUILTIN_SPLITS:
        raise SplitError(f"unknown built-in split {name!r}; expected one of {sorted(BUILTIN_SPLITS)}")
    return BUILTIN_SPLITS[name]


def builtin_refs(split: BuiltinSplit, count: int) -> list[SceneRef]:
    """The first `count` tokens of a built-in split: each generated log's frames one after another."""
    per_log = split.frames_per_log
    current = GeneratorConfig().current_index
    refs = []
    for family, seed in scene_specs(-(-count // per_log), split.seed, FAMILIES):
        token = scene_token(family, seed)
        refs += [SceneRef(token if k == 0 else frame_token(token, current + FRAME_STRIDE * k), family, seed, frame=k)
                 for k in range(per_log)]
    return refs[:count]


def split_kind(spec: str) -> str:
    """How a split is evaluated by default: "closed_loop" for Leaderboard routes (`carla:` and closed-loop built-in
    splits), "one_shot" (NAVSIM-style scoring) otherwise."""
    if spec.startswith("carla:"):
        return "closed_loop"
    if spec.startswith("builtin:"):
        return builtin_split(spec.removeprefix("builtin:")).kind
    return "one_shot"


def resolve_split(spec: str, limit: int | None = None, navsim_logs: str | Path | None = None,
                  nuplan_maps: str | Path | None = None, sensor_blobs: str | Path | None = None,
                  town_dir: str | Path | None = None, scene_filter: str | Path | None = None) -> list[SceneRef]:
    """Scenes of `builtin:NAME`, of `navsim:NAME` (needs `navsim_logs` and `nuplan_maps`; `scene_filter` a NAVSIM
    scene filter YAML), of `carla:ROUTES.xml` (needs `town_dir`) or of a directory of `.npz` scene files (sorted by
    name); the first `limit`."""
    if spec.startswith("carla:"):
        return carla_split(Path(spec.removeprefix("carla:")), town_dir, limit)
    if spec.startswith("navsim:"):
        return navsim_split(spec.removeprefix("navsim:"), navsim_logs, nuplan_maps, sensor_blobs, limit, scene_filter)
    if scene_filter is not None:
        raise SplitError(f"a scene filter applies to navsim: splits only, not to {spec!r}")
    if spec.startswith("builtin:"):
        split = builtin_split(spec.removeprefix("builtin:"))
        count = split.size if limit is None else min(limit, split.size)
        return builtin_refs(split, count)
    directory = Path(spec)
    if not directory.is_dir():
        raise SplitError(f"split {spec!r} is neither builtin:{{{','.join(BUILTIN_SPLITS)}}} nor a directory")
    files = sorted(directory.glob("*.npz"))
    if not files:
        raise SplitError(f"split directory {directory} holds no .npz scene files")
    files = files if limit is None else files[:limit]
    return [SceneRef(path.stem, path=path) for path in files]


def navsim_log_dir(name: str, navsim_logs: str | Path | None) -> Path:
    """The folder of a NAVSIM split's logs: `<navsim_logs>/<name>/`, or `navsim_logs` itself when it holds the logs."""
    if navsim_logs is None:
        raise SplitError(f"split navsim:{name} needs the NAVSIM logs folder (--navsim-logs DIR)")
    root = Path(navsim_logs)
    if (root / name).is_dir():
        return root / name
    if root.is_dir() and any(root.glob("*.pkl")):
        return root
    raise SplitError(f"split navsim:{name}: no folder {root / name} of log pickles"
                     + (f" (and {root} holds no .pkl logs)" if root.is_dir() else f" ({root} does not exist)"))


def navsim_split(name: str, navsim_logs: str | Path | None, nuplan_maps: str | Path | None,
                 sensor_blobs: str | Path | None = None, limit: int | None = None,
                 scene_filter: str | Path | None = None) -> list[SceneRef]:
    """Scenes of the logs of a NAVSIM split (sorted by log name), windows as NAVSIM's SceneFilter makes them (by
    default 4 history + 10 future frames, one window after another; `scene_filter` a NAVSIM scene filter YAML: its
    frame interval, logs and tokens); checks that each log's map is there."""
    from scenarios.navsim_logs import NUM_HISTORY_FRAMES, NavsimLogError, filter_scenes, load_navsim_log, map_file

    try:
        selection = SceneFilter() if scene_filter is None else SceneFilter.from_yaml(scene_filter)
    except SceneFilterError as err:
        raise SplitError(str(err)) from None
    if (selection.num_history_frames, selection.num_future_frames) != (NUM_HISTORY_FRAMES, 10) or not selection.has_route:
        raise SplitError(f"scene filter {scene_filter}: w0sim scores windows of {NUM_HISTORY_FRAMES} history + 10 future "
                         "frames with a route (has_route true)")
    if selection.max_scenes is not None:
        limit = selection.max_scenes if limit is None else min(limit, selection.max_scenes)
    folder = navsim_log_dir(name, navsim_logs)
    if nuplan_maps is None or not Path(nuplan_maps).is_dir():
        raise SplitError(f"split navsim:{name} needs the nuPlan maps folder (--nuplan-maps DIR)"
                         + (f"; {nuplan_maps} is not a directory" if nuplan_maps is not None else ""))
    refs: list[SceneRef] = []
    locations: set[str] = set()
    logs = sorted(folder.glob("*.pkl"))
    if selection.log_names is not None:
        logs = [log for log in logs if log.stem in set(selection.log_names)]
    for log in logs:
        try:
            frames = load_navsim_log(log)
            windows = filter_scenes(frames, frame_interval=selection.frame_interval, tokens=selection.tokens,
                                    max_scenes=None if limit is None else limit - len(refs))
            for location in {str(w[0]["map_location"]) for w in windows} - locations:
                map_file(nuplan_maps, location)
                locations.add(location)
        except NavsimLogError as exc:
            raise SplitError(str(exc)) from None
        index = {id(frame): k for k, frame in enumerate(frames)}
        starts = [index[id(w[0])] for w in windows]
        refs += [SceneRef(str(w[NUM_HISTORY_FRAMES - 1]["token"]), "navsim", navsim_log=log, window_start=start,
                          nuplan_maps=Path(nuplan_maps), sensor_blobs=None if sensor_blobs is None else Path(sensor_blobs),
                          earlier_windows=tuple(starts[:k]))
                 for k, (w, start) in enumerate(zip(windows, starts))]
        if limit is not None and len(refs) >= limit:
            break
    if not refs:
        raise SplitError(f"split navsim:{name}: the logs in {folder} hold no scenes (4 history + 10 future frames "
                         "with route roadblocks)")
    return refs


def carla_split(route_file: Path, town_dir: str | Path | None, limit: int | None = None) -> list[SceneRef]:
    """The routes of a Leaderboard route file, in file order; checks that every route's town is in `town_dir`."""
    from scenarios.leaderboard import RouteFileError, read_routes

    if town_dir is None or not Path(town_dir).is_dir():
        raise SplitError(f"split carla:{route_file} needs the folder of CARLA towns, TownNN.xodr (--town-dir DIR)"
                         + (f"; {town_dir} is not a directory" if town_dir is not None else ""))
    try:
        routes = read_routes(route_file)[:limit]
    except RouteFileError as err:
        raise SplitError(str(err)) from None
    for route in routes:
        if not (Path(town_dir) / f"{route.town}.xodr").is_file():
            known = ", ".join(sorted(p.stem for p in Path(town_dir).glob("*.xodr"))) or "none"
            raise SplitError(f"{route_file}: route {route.route_id} names town {route.town!r}, which is not in "
                             f"{town_dir} (towns there: {known})")
    from scenarios.route_scenes import route_token

    return [SceneRef(route_token(r), r.town, 0, route_file=Path(route_file), route_id=r.route_id,
                     town_dir=Path(town_dir)) for r in routes]


__all__ = ["BUILTIN_SPLITS", "EARLIER_WINDOWS_KEY", "BuiltinSplit", "SceneRef", "SplitError", "builtin_split",
           "carla_split", "navsim_log_dir", "navsim_split", "repeated", "resolve_split"]
