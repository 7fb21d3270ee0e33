"""Values written for people, the same way in every message."""

from __future__ import annotations

__all__ = ["format_seconds"]


def format_seconds(value: float) -> str:
    """A measured duration for a message: ``"0.05"``, ``"2"``, ``"9.5"``,
    ``"312"`` (three significant digits below 10 s, whole seconds from
    there). A configured value is shown as given, with ``:g``."""
    return f"{value:.3g}" if value < 10 else f"{value:.0f}"
