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
- the fatal signals turned into exceptions (:data:`FATAL_SIGNALS`,
  :func:`catch_fatal_signals`) and :func:`hold_signals`, which postpones
  them while a step must not be torn in half (a child being started).

Call from the thread that drives the reactor.
"""

from __future__ import annotations

from untwisted._adapt import GeneratorRunner, as_deferred, set_generator_runner
from untwisted._driver import DrivableReactor, Driver
from untwisted._global import default_driver
from untwisted._signals import FATAL_SIGNALS, catch_fatal_signals
from untwisted._signals import held as hold_signals

__all__ = [
    "FATAL_SIGNALS",
    "DrivableReactor",
    "Driver",
    "GeneratorRunner",
    "as_deferred",
    "catch_fatal_signals",
    "default_driver",
    "hold_signals",
    "set_generator_runner",
]
