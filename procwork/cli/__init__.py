"""procwork.cli: the ``procwork`` command (``procwork run``, ``procwork monitor``).

The console script and ``python -m procwork`` both call :func:`main`. It is
the top of the house: it may import everything below it, nothing imports it.
"""

from __future__ import annotations

from procwork.cli._main import main

__all__ = ["main"]
