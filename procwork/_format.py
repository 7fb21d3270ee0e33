"""Values written for people, the same way in every message."""

from __future__ import annotations

__all__ = ["clip", "format_seconds"]

# How much of a value a message shows.
_SHOWN = 200


def clip(text: str) -> str:
    """``text`` for a message: cut, saying how long it was, if it is long."""
    if len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... ({len(text)} characters)"


def format_seconds(value: float) -> str:
    """A measured duration for a message: ``"0.05"``, ``"2"``, ``"9.5"``,
    ``"312"`` (three significant digits below 10 s, whole seconds from
    there). A configured value is shown as given, with ``:g``."""
    return f"{value:.3g}" if value < 10 else f"{value:.0f}"
