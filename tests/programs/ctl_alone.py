"""``procwork ctl ARGS`` run in this Python, then asked what it imported.

Run by ``tests/cli/test_ctl_imports.py``: ctl is a blocking client of the
monitor's socket and must load nothing of Twisted (nor untwisted,
clockwork, zope or attrs, which come with it), so that a call costs a few
milliseconds of CPU, not the 0.2 s of loading the reactor; nor the
standard library's slow ones it has no use for (shutil, which argparse's
help formatter imports and which brings bz2 and lzma; subprocess,
tempfile, dataclasses). Exits with ctl's status; 99, naming what was
loaded, if any of those was.

``--import-first MODULE`` (before ctl's arguments) imports MODULE first:
the check's own test, that it sees what was loaded.
"""

from __future__ import annotations

import importlib
import sys

from procwork.cli import main

HEAVY = ("twisted", "untwisted", "clockwork", "zope", "attr", "attrs")
SLOW = ("shutil", "subprocess", "tempfile", "dataclasses")


def run() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--import-first"]:
        importlib.import_module(args[1])
        args = args[2:]
    status = main(["ctl", *args])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY + SLOW)
    if loaded:
        print(f"procwork ctl imported {', '.join(loaded)}", file=sys.stderr)
        sys.exit(99)
    sys.exit(status)


if __name__ == "__main__":
    run()
