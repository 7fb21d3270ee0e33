"""The driver of the global reactor: the one ``add``, ``tick`` and ``run`` use."""

from __future__ import annotations

from untwisted import _signals
from untwisted._driver import Driver

__all__ = ["default_driver"]

_driver = Driver()
# A fatal signal reaching a reactor that the program runs itself (not this
# driver) stops that reactor rather than raising into Twisted's loop.
_signals.set_foreign_loop(_driver.stopper_if_foreign)


def default_driver() -> Driver:
    """The driver of the global reactor that ``add``/``tick``/``run`` use."""
    return _driver
