"""The global reactor, typed for the programs that use it.

Importing it installs Twisted's default reactor, as ``from twisted.internet
import reactor`` does; mypy reads that name as the module
``twisted.internet.reactor``, not as the reactor it becomes at run time, so
it is re-exported here as ``Any``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _installed

reactor: Any = _installed
