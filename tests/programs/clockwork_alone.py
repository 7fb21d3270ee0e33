"""``import clockwork`` loads no network code; ``clockwork.net`` does.

Run by ``tests/project/test_layering.py`` in a fresh program: after
``import clockwork``, ``clockwork.NetworkError`` is there but neither
clockwork.net, Twisted's web client nor pyOpenSSL is loaded. Fails (an
AssertionError) otherwise.
"""

from __future__ import annotations

import sys


def main() -> None:
    import clockwork

    assert issubclass(clockwork.NetworkError, OSError)
    for module in ("clockwork.net", "twisted.web.client", "OpenSSL"):
        assert module not in sys.modules, module
    import clockwork.net

    assert clockwork.net.NetworkError is clockwork.NetworkError


if __name__ == "__main__":
    main()
