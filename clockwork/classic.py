"""clockwork.classic: the first clockwork's vocabulary.

The user's original clockwork (Python 2, busy-polling) spelled its keywords
as objects to yield: ``yield Control``, ``yield Return(x)``, ``yield
Value(x)``, ``yield Input(...)``; it ran commands with :class:`Command` and
generators as plain ones with :func:`genwrap`. Code written for it runs on
today's scheduler unchanged, and begins with ``from clockwork import *``:
so these names are importable from :mod:`clockwork` too, and in its
``__all__``. This is their home, and where their documentation points.

New code needs none of this: a bare ``yield`` is ``Control``, ``return x``
is ``Return(x)``, ``procwork.run`` is ``Command``. The whole story, with the
original specification's examples, is ``specs/clockwork_classic.md``.
"""

from __future__ import annotations

from clockwork._classic import (
    Call,
    Command,
    Control,
    Each,
    Input,
    Output,
    Return,
    Value,
    genwrap,
    standalone,
)

__all__ = [
    "Call",
    "Command",
    "Control",
    "Each",
    "Input",
    "Output",
    "Return",
    "Value",
    "genwrap",
    "standalone",
]
