"""The typed fields of the config and what each admits: a range, a choice, a plain name. The sections declare their
fields with these (pipeline.config.schema); loading checks every value against them (pipeline.config.loading), and
the configuration reference prints them (pipeline.config_reference)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """The interval a number must lie in; `low_open` leaves out the low end (a fraction above 0)."""
    low: float
    high: float
    low_open: bool = False

    def admits(self, value: float) -> bool:
        # Written so that NaN is refused: every comparison with it is false.
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        return f"in ({self.low}, {self.high}]" if self.low_open else f"between {self.low} and {self.high}"


@dataclass(frozen=True)
class CountOrFraction:
    """A whole count (>= 1) or a fraction strictly between 0 and 1 of something counted later."""
    high: int

    def admits(self, value: float) -> bool:
        return 0 < value < 1 or (1 <= value <= self.high and value == int(value))

    def __str__(self) -> str:
        return f"a fraction in (0, 1) or a whole count between 1 and {self.high}"


@dataclass(frozen=True)
class Choices:
    options: tuple[str, ...]
    ignore_case: bool = False

    def admits(self, value: str) -> bool:
        return (value.upper() if self.ignore_case else value) in self.options

    def __str__(self) -> str:
        return f"one of {', '.join(self.options)}"


@dataclass(frozen=True)
class PlainName:
    """A name that becomes a folder name (the registry's model cache): letters, digits, '.', '_', '-', and not
    '.' or '..', so it cannot lead outside its folder."""
    def admits(self, value: str) -> bool:
        return re.fullmatch(r"[A-Za-z0-9._-]+", value) is not None and value not in (".", "..")

    def __str__(self) -> str:
        return "a plain name (letters, digits, '.', '_', '-')"


def between(low: float, high: float, default: Any = dataclasses.MISSING) -> Any:
    """A numeric field and its inclusive range, checked when the config is loaded."""
    return field(default=default, metadata={"allowed": Bounds(low, high)})


def positive(high: float, default: float) -> Any:
    """A numeric field in (0, high]."""
    return field(default=default, metadata={"allowed": Bounds(0, high, low_open=True)})


def fraction(default: float, *, zero: bool = True) -> Any:
    """A field in [0, 1], or in (0, 1] when `zero` is not allowed."""
    return field(default=default, metadata={"allowed": Bounds(0, 1, low_open=not zero)})


def count_or_fraction(high: int, default: float) -> Any:
    return field(default=default, metadata={"allowed": CountOrFraction(high)})


def one_of(*options: str, default: str, ignore_case: bool = False) -> Any:
    return field(default=default, metadata={"allowed": Choices(options, ignore_case)})
