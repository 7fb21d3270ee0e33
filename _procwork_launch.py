"""The ``procwork`` console script: ``procwork timeout`` without Twisted.

``procwork timeout`` must start as fast as coreutils ``timeout`` would be
replaced by it in scripts, and importing the ``procwork`` package (Twisted
with it) takes a few hundred milliseconds. So this module, outside the
package, loads ``procwork/cli/_timeout.py`` (standard library only) by its
path for ``procwork timeout``, and imports :func:`procwork.cli.main` for
everything else.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> int:
    """Run the ``procwork`` command line; the exit status."""
    if sys.argv[1:2] == ["timeout"]:
        import importlib.util
        import os

        # find_spec of a top-level package locates it without importing it.
        package = importlib.util.find_spec("procwork")
        if package is not None and package.submodule_search_locations:
            path = os.path.join(
                next(iter(package.submodule_search_locations)), "cli", "_timeout.py"
            )
            spec = importlib.util.spec_from_file_location("_procwork_timeout", path)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
                status: int = module.main(sys.argv[2:])
                return status
    from procwork.cli import main as procwork_main

    return procwork_main()
