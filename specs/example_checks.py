"""The python check of example-monitor.toml (``python = "example_checks:queue_ok"``)."""

import os


def queue_ok() -> tuple[bool, str]:
    """A check function: ok while the example's spool is short."""
    spool = "/tmp"
    count = len(os.listdir(spool))
    return count < 1_000_000, f"{count} entries in {spool}"
