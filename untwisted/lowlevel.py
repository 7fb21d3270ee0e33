"""untwisted.lowlevel: the plumbing, for code that builds on untwisted.

A program needs only :mod:`untwisted`'s ``add``, ``tick`` and ``run``. This
namespace (like ``trio.lowlevel``) holds what a scheduler built on untwisted
(clockwork), a library that starts processes (procwork) or a test driving a
fake reactor needs:

- :class:`Driver`, which iterates a reactor while a blocking caller waits,
  and :func:`default_driver`, the one of the global reactor;
  :class:`DrivableReactor`, what a driver needs of a reactor;
- :func:`set_generator_runner`, the hook through which clockwork runs the
  generators untwisted is given, and :func:`as_deferred`, which turns what
  untwisted accepts into a Deferred;
- the bridge to asyncio: :func:`loop_reactor`, the reactor of the asyncio
  loop running in this thread (made on first use, shut down at the end of
  ``asyncio.run``), its class :class:`LoopReactor` (imported on first
  use: it brings Twisted's asyncio reactor), :func:`running_loop`,
  :func:`is_loop_reactor`, and :class:`AwaitableDeferred`, a Deferred that
  asyncio tasks can await;
- the fatal signals turned into exceptions (:data:`FATAL_SIGNALS`,
  :func:`catch_fatal_signals`) and :func:`hold_signals`, which postpones
  them while a step must not be torn in half (a child being started).

Call from the thread that drives the reactor (the loop reactor's functions:
from any thread, each for its own running loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from untwisted._adapt import GeneratorRunner, as_deferred, set_generator_runner
from untwisted._asyncio import is_loop_reactor, loop_reactor, running_loop
from untwisted._awaitable import AwaitableDeferred
from untwisted._driver import DrivableReactor, Driver
from untwisted._global import default_driver
from untwisted._signals import FATAL_SIGNALS, catch_fatal_signals
from untwisted._signals import held as hold_signals

if TYPE_CHECKING:
    from untwisted._loopreactor import LoopReactor as LoopReactor

__all__ = [
    "FATAL_SIGNALS",
    "AwaitableDeferred",
    "DrivableReactor",
    "Driver",
    "GeneratorRunner",
    "LoopReactor",
    "as_deferred",
    "catch_fatal_signals",
    "default_driver",
    "hold_signals",
    "is_loop_reactor",
    "loop_reactor",
    "running_loop",
    "set_generator_runner",
]


def __getattr__(name: str) -> object:
    """``LoopReactor``, imported on first use (Twisted's asyncio reactor)."""
    if name == "LoopReactor":
        from untwisted._loopreactor import LoopReactor

        return LoopReactor
    raise AttributeError(f"module 'untwisted.lowlevel' has no attribute {name!r}")
