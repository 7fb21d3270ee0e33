"""Which services a control request names: names, ``all``, globs, families.

``procwork ctl restart 'web-*'`` and ``procwork ctl restart worker`` (a
``[[service]]`` with ``numprocs``, whose instances are ``worker-0``,
``worker-1``, ...) are resolved here, in the monitor, against the services
it runs, so that every command takes them the same way (status, start,
stop, restart, signal, tail, reopen) and the client stays a few lines.

A pattern is, in this order:

- ``all``: every service;
- the name of a service: that one (a service's own name wins over a
  family of the same name);
- the name of a numprocs family (:func:`family_of`): its instances;
- a glob (``*``, ``?``, ``[...]``; :func:`fnmatch.fnmatchcase`): the
  services it matches, at least one.

Anything else is refused, naming the pattern and the names close to it.
No Twisted: a pure function of the names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase

from procwork._errors import ProcworkError
from procwork._format import clip

__all__ = ["UnknownPattern", "family_of", "resolve"]

# A separator next to {instance} goes with it: "worker-{instance}" is the
# family "worker", "{instance}.web" "web", "app_{instance}_db" "app_db".
_INSTANCE = re.compile(r"([-_.:@]?)\{instance\}([-_.:@]?)")
_GLOB = re.compile(r"[*?[]")

#: At most this many services are listed in a refusal; past it, a count.
_LISTED = 20


class UnknownPattern(ProcworkError, ValueError):
    """A pattern names no service; the message says which names are close."""


def family_of(name: str) -> str | None:
    """The family name of a ``[[service]]`` entry's ``name`` template: the
    name with ``{instance}`` (and the separator next to it) taken out;
    None when the template has no ``{instance}``, or nothing is left.

    >>> family_of("worker-{instance}"), family_of("{instance}.web")
    ('worker', 'web')
    >>> family_of("app_{instance}_db")
    'app_db'
    >>> print(family_of("web"))
    None
    """
    if "{instance}" not in name:
        return None
    family = _INSTANCE.sub(_between, name).strip("-_.:@")
    return family or None


def _between(match: re.Match[str]) -> str:
    before, after = match.groups()
    return before if before and after else ""


def resolve(
    patterns: Iterable[str],
    services: Sequence[str],
    families: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """The services ``patterns`` name, each once, in the order of ``services``.

    Args:
        patterns: What the request names (see the module).
        services: The names of the services the monitor runs, in order.
        families: Family name -> the names of its instances.

    Raises:
        UnknownPattern: a pattern names no service; nothing is resolved.
    """
    families = families or {}
    known = set(services)
    wanted: set[str] = set()
    for pattern in patterns:
        if pattern == "all":
            wanted.update(services)
        elif pattern in known:
            wanted.add(pattern)
        elif pattern in families and known.intersection(families[pattern]):
            wanted.update(known.intersection(families[pattern]))
        elif _GLOB.search(pattern):
            matched = [name for name in services if fnmatchcase(name, pattern)]
            if not matched:
                raise UnknownPattern(
                    f"no service matches {clip(repr(pattern))}"
                    + _listing(pattern, services, families)
                )
            wanted.update(matched)
        else:
            raise UnknownPattern(
                f"no service named {clip(repr(pattern))}"
                + _listing(pattern, services, families)
            )
    return [name for name in services if name in wanted]


def _listing(
    pattern: str, services: Sequence[str], families: Mapping[str, Sequence[str]]
) -> str:
    """What to say after "no service named X": the close names, else the
    services (a count past :data:`_LISTED`)."""
    # The families first: a whole family is likelier meant than one of it.
    candidates = [*(f for f in families if f not in services), *services]
    close = difflib.get_close_matches(pattern, candidates, n=5, cutoff=0.6)
    close.sort(key=candidates.index)  # in the monitor's order, not by score
    if close:
        return f"; did you mean {_either(close)}?"
    if not services:
        return " (the monitor runs no services)"
    if len(services) > _LISTED:
        return (
            f" ({len(services)} services; procwork ctl status lists them, and "
            "'web-*' or a numprocs family name names several)"
        )
    return f" (services: {', '.join(services)})"


def _either(names: Sequence[str]) -> str:
    quoted = [repr(name) for name in names]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"
