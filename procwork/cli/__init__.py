"""procwork.cli: the ``procwork`` command (``procwork run``, ``procwork monitor``,
``procwork ctl``, ``procwork timeout``).

The console script and ``python -m procwork`` both call :func:`main`. It is
the top of the house: it may import everything below it, nothing imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``procwork`` command; returns the exit status.

    ``procwork timeout`` is dispatched here, before the parser of the other
    commands is imported: it must start about as fast as the coreutils
    ``timeout`` it replaces, and needs only the standard library.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["timeout"]:
        from procwork.cli._timeout import main as timeout_main

        return timeout_main(args[1:])
    from procwork.cli._main import main as command_main

    return command_main(args)
