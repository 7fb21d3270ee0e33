"""Run ``true`` as root with ``user=0`` from a process that is not root:
subprocess and procwork both fail to start it; prints how each failed.

Started as root (as the tests run in CI), it first runs ``true`` once, so
that every module a run needs is imported, then drops to nobody: the
interpreter may live where nobody cannot read (pyenv under /root).
"""

from __future__ import annotations

import os
import subprocess

import procwork
import untwisted

NOBODY = 65534


def main() -> None:
    if os.geteuid() == 0:
        untwisted.run(procwork.run(["true"]), timeout=30)
        subprocess.run(["true"], timeout=30, check=True)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    try:
        subprocess.run(["true"], user=0, timeout=30)
    except PermissionError:
        print("subprocess: PermissionError", flush=True)
    try:
        untwisted.run(procwork.run(["true"], user=0), timeout=30)
    except procwork.SpawnError as e:
        print(f"procwork: SpawnError: {e}", flush=True)


if __name__ == "__main__":
    main()
