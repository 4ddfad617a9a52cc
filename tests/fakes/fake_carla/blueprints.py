"""The fake CARLA server's blueprint catalog: actor attributes, blueprints, the library and each actor's shape."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterator


class NotFoundError(IndexError, RuntimeError):
    """An unknown blueprint or attribute: CARLA raises IndexError; catching RuntimeError works too."""


class FakeActorAttribute:
    """Like carla.ActorAttribute: ``id``, ``type``, ``recommended_values``, ``is_modifiable`` and the ``as_*`` readers."""

    def __init__(self, attr_id: str, value: str, modifiable: bool = True, type_name: str = "str",
                 recommended: tuple[str, ...] = ()) -> None:
        self.id = attr_id
        self.type = type_name
        self.is_modifiable = modifiable
        self.recommended_values = list(recommended)
        self._value = str(value)

    def as_str(self) -> str:
        return self._value

    def as_int(self) -> int:
        return int(float(self._value))

    def as_float(self) -> float:
        return float(self._value)

    def as_bool(self) -> bool:
        return self._value.strip().lower() in ("true", "1", "yes", "on")

    def __str__(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"ActorAttribute(id={self.id}, type={self.type}, value={self._value})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FakeActorAttribute):
            return self._value == other._value
        if isinstance(other, bool):
            return self.as_bool() == other
        if isinstance(other, (int, float)):
            try:
                return self.as_float() == float(other)
            except ValueError:
                return False
        if isinstance(other, str):
            return self._value == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class _Shape:
    extent: tuple[float, float, float]
    box_z: float            # bounding-box centre height above the actor origin
    wheel_base: float = 0.0
    wheels: int = 0
    base_type: str = ""
    semantic_tags: tuple[int, ...] = ()


_CAR = (2.3, 1.0, 0.75)
_SHAPES: dict[str, _Shape] = {
    "vehicle.lincoln.mkz_2020": _Shape((2.45, 1.06, 0.76), 0.76, 2.875, 4, "car", (14,)),
    "vehicle.tesla.model3": _Shape(_CAR, 0.75, 2.7, 4, "car", (14,)),
    "vehicle.audi.a2": _Shape(_CAR, 0.75, 2.7, 4, "car", (14,)),
    "vehicle.nissan.micra": _Shape(_CAR, 0.75, 2.7, 4, "car", (14,)),
    "vehicle.bh.crossbike": _Shape((0.8, 0.3, 0.8), 0.8, 2.7, 2, "bicycle", (19,)),
    "walker.pedestrian.0001": _Shape((0.2, 0.2, 0.9), 0.0, semantic_tags=(12,)),
    "static.prop.trafficcone01": _Shape((0.3, 0.3, 0.4), 0.4, semantic_tags=(20,)),
    "sensor.camera.rgb": _Shape((0.0, 0.0, 0.0), 0.0),
    "sensor.other.collision": _Shape((0.0, 0.0, 0.0), 0.0),
    "sensor.other.lane_invasion": _Shape((0.0, 0.0, 0.0), 0.0),
}
_TRAFFIC_LIGHT_SHAPE = _Shape((0.3, 0.3, 2.5), 2.5, semantic_tags=(7,))
_SPECTATOR_SHAPE = _Shape((0.0, 0.0, 0.0), 0.0)
_ROLE_VALUES = ("autopilot", "scenario", "ego_vehicle", "hero")


def _catalog_attributes(bp_id: str) -> list[FakeActorAttribute]:
    shape = _SHAPES[bp_id]
    attrs = [FakeActorAttribute("role_name", "autopilot", True, "str", _ROLE_VALUES)]
    if bp_id.startswith("vehicle."):
        attrs += [FakeActorAttribute("number_of_wheels", str(shape.wheels), False, "int"),
                  FakeActorAttribute("base_type", shape.base_type, False),
                  FakeActorAttribute("generation", "2", False, "int"),
                  FakeActorAttribute("has_lights", "true" if shape.wheels == 4 else "false", False, "bool"),
                  FakeActorAttribute("sticky_control", "true", True, "bool"),
                  FakeActorAttribute("color", "255,255,255", True, "rgbcolor", ("255,255,255", "0,0,0", "200,20,20"))]
    elif bp_id.startswith("walker."):
        attrs += [FakeActorAttribute("is_invincible", "true", True, "bool"),
                  FakeActorAttribute("speed", "1.4", True, "float", ("1.4", "2.0")),
                  FakeActorAttribute("generation", "2", False, "int")]
    elif bp_id.startswith("static."):
        attrs += [FakeActorAttribute("size", "small", False)]
    elif bp_id == "sensor.camera.rgb":
        attrs += [FakeActorAttribute("image_size_x", "800", True, "int"),
                  FakeActorAttribute("image_size_y", "600", True, "int"),
                  FakeActorAttribute("fov", "90", True, "float"),
                  FakeActorAttribute("sensor_tick", "0.0", True, "float")]
    return attrs


class FakeBlueprint:
    """Like carla.ActorBlueprint: ``id``, ``tags``, attribute access; iterating yields its attributes."""

    def __init__(self, bp_id: str, tags: list[str], attributes: list[FakeActorAttribute]) -> None:
        self.id = bp_id
        self.tags = list(tags)
        self._attributes = {a.id: a for a in attributes}

    def copy(self) -> FakeBlueprint:
        return FakeBlueprint(self.id, self.tags, [FakeActorAttribute(a.id, a.as_str(), a.is_modifiable, a.type,
                                                                     tuple(a.recommended_values))
                                                  for a in self._attributes.values()])

    def has_tag(self, tag: str) -> bool:
        return tag in self.tags

    def match_tags(self, wildcard: str) -> bool:
        return fnmatch.fnmatch(self.id, wildcard) or any(fnmatch.fnmatch(t, wildcard) for t in self.tags)

    def has_attribute(self, attr_id: str) -> bool:
        return attr_id in self._attributes

    def get_attribute(self, attr_id: str) -> FakeActorAttribute:
        try:
            return self._attributes[attr_id]
        except KeyError:
            raise NotFoundError(f"blueprint '{self.id}' does not have attribute '{attr_id}'") from None

    def set_attribute(self, attr_id: str, value: str) -> None:
        attr = self.get_attribute(attr_id)
        if not attr.is_modifiable:
            raise RuntimeError(f"attribute '{attr_id}' of blueprint '{self.id}' is not modifiable")
        attr._value = str(value)

    def __iter__(self) -> Iterator[FakeActorAttribute]:
        return iter(list(self._attributes.values()))

    def __len__(self) -> int:
        return len(self._attributes)

    def __repr__(self) -> str:
        return f"ActorBlueprint(id={self.id}, tags={self.tags})"


def _catalog() -> list[FakeBlueprint]:
    out = []
    for bp_id in _SHAPES:
        parts = bp_id.split(".")
        tags = list(dict.fromkeys(parts[::-1] + ([_SHAPES[bp_id].base_type] if _SHAPES[bp_id].base_type else [])))
        out.append(FakeBlueprint(bp_id, tags, _catalog_attributes(bp_id)))
    return out


class FakeBlueprintLibrary:
    """Like carla.BlueprintLibrary: ``find``, ``filter``, iteration, ``len`` and indexing."""

    def __init__(self, blueprints: list[FakeBlueprint]) -> None:
        self._blueprints = list(blueprints)

    def find(self, bp_id: str) -> FakeBlueprint:
        for bp in self._blueprints:
            if bp.id == bp_id:
                return bp
        raise NotFoundError(f"blueprint '{bp_id}' not found")

    def filter(self, wildcard: str) -> FakeBlueprintLibrary:
        return FakeBlueprintLibrary([bp for bp in self._blueprints if bp.match_tags(wildcard)])

    def __iter__(self) -> Iterator[FakeBlueprint]:
        return iter(list(self._blueprints))

    def __len__(self) -> int:
        return len(self._blueprints)

    def __getitem__(self, index: int) -> FakeBlueprint:
        return self._blueprints[index]
