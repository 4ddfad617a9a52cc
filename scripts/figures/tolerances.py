"""How close a re-measured value must be to the published one: its printed precision, a ratio, an absolute
difference, the same text or prefix."""
from __future__ import annotations

from dataclasses import dataclass


def decimals_of(text: str) -> int:
    """How many digits a printed number has after its decimal point."""
    return len(text.split(".")[1]) if "." in text else 0


def parse_number(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass(frozen=True)
class Printed:
    """Equal to the printed precision: within half a unit of the last printed digit."""

    def ok(self, published: str, measured: float | str) -> bool:
        half = 0.5 * 10.0 ** -decimals_of(published)
        return abs(parse_number(published) - float(measured)) <= half + 1e-9

    def describe(self, published: str) -> str:
        return f"±{0.5 * 10.0 ** -decimals_of(published):.{decimals_of(published) + 1}f}"


@dataclass(frozen=True)
class Ratio:
    """A wall-clock time: within a factor of the published one (timings on a shared machine vary)."""

    factor: float

    def ok(self, published: str, measured: float | str) -> bool:
        published_value = parse_number(published)
        return published_value / self.factor <= float(measured) <= published_value * self.factor

    def describe(self, published: str) -> str:
        return f"x{self.factor:g} (time)"


@dataclass(frozen=True)
class Absolute:
    """Within a stated distance (a figure of a training run, which a re-run does not reproduce exactly)."""

    distance: float

    def ok(self, published: str, measured: float | str) -> bool:
        return abs(parse_number(published) - float(measured)) <= self.distance + 1e-9

    def describe(self, published: str) -> str:
        return f"±{self.distance:g}"


@dataclass(frozen=True)
class Same:
    """The same text (a status, a count read as text)."""

    def ok(self, published: str, measured: float | str) -> bool:
        return published == str(measured)

    def describe(self, published: str) -> str:
        return "same"


@dataclass(frozen=True)
class Prefix:
    """A hash printed by its first digits: the measured hash starts with them."""

    def ok(self, published: str, measured: float | str) -> bool:
        return bool(published) and str(measured).startswith(published)

    def describe(self, published: str) -> str:
        return "same prefix"


def format_like(published: str, measured: float | str, tolerance) -> str:
    """`measured` printed as `published` is: as many decimals, thousands separators if it has them."""
    if isinstance(tolerance, Prefix):
        return str(measured)[: len(published)]
    if isinstance(measured, str):
        return measured
    decimals = decimals_of(published)
    text = f"{measured:,.{decimals}f}" if "," in published else f"{measured:.{decimals}f}"
    return f"+{text}" if published[:1] in "+-" and measured >= 0 else text  # a signed column stays signed
