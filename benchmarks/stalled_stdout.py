"""``procwork monitor`` whose stdout nobody reads: does it still keep time?

Runs a real ``procwork monitor`` with its stdout a pipe that this script never
reads (``procwork monitor | less`` with the pager paused), a service that
prints about a thousand lines a second (so the pipe and the 1 MiB buffer
are full within seconds) and a check every 0.5 s. After ``--seconds`` of
that it reads the monitor's status over HTTP, reads the pipe again for
``--reader-back`` seconds (3; 0: not before the exit), sends SIGTERM and
times the exit, and prints:

- check runs during the window against the schedule (runs / due);
- how long the exit took after SIGTERM;
- ``procwork_log_lines_dropped_total`` from ``/metrics``, and the "N log
  lines dropped" line found in the output once it is read.

It fails (exit 1) when runs fall under 90 % of the schedule or the exit
takes over 2 s. Run: ``.venv/bin/python benchmarks/stalled_stdout.py``
(``--seconds 30`` by default; ``--load N`` adds N busy-looping processes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _partners import (  # beside this script
    DROPPED_NOTICE,
    Monitor,
    PipeReader,
    metric,
)

from tests.support import cpu_load

EVERY = 0.5


def runs(monitor: Monitor) -> int:
    return int(monitor.status()["checks"]["tick"]["runs"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument(
        "--reader-back",
        type=float,
        default=3.0,
        help="seconds the pipe is read before SIGTERM (0: SIGTERM while unread)",
    )
    args = parser.parse_args()
    with cpu_load(args.load), tempfile.TemporaryDirectory() as tmp:
        config = textwrap.dedent(
            f"""
            [monitor]
            max_load = false
            summary_every = 1

            [[service]]
            name = "chatty"
            command = ["{{python}}", "-u", "-c", '''
import time
i = 0
while True:
    i += 1
    print(f"line {{i}} " + "x" * 60)
    time.sleep(0.001)
''']
            console_rate = 1000

            [[check]]
            name = "tick"
            command = ["true"]
            every = {EVERY}
            """
        )
        # stdout: a pipe never read until the end
        monitor = Monitor(Path(tmp), config, http=True, stdout_pipe=True)
        try:
            first = runs(monitor)
            started = time.monotonic()
            time.sleep(args.seconds)
            try:
                last = runs(monitor)
                lost = metric(monitor.metrics(), "procwork_log_lines_dropped_total")
            except OSError as e:
                print(f"no answer over HTTP after {args.seconds:g} s: {e}")
                last, lost = first, None
            window = time.monotonic() - started
            due = window / EVERY
            # The reader comes back (the buffered lines, then the notice),
            # or with --reader-back 0 the SIGTERM finds the pipe still full.
            assert monitor.proc.stdout is not None
            reader = PipeReader(monitor.proc.stdout)
            if args.reader_back:
                reader.start()
                time.sleep(args.reader_back)
            exit_seconds = monitor.terminate(30)
            output = reader.join(10)
        finally:
            if monitor.proc.poll() is None:
                monitor.proc.kill()
                monitor.proc.wait(timeout=10)
    notices = DROPPED_NOTICE.findall(output)
    ratio = (last - first) / due
    print(
        f"window {window:.1f} s, stdout unread, {args.load} busy processes; "
        f"read again {args.reader_back:g} s before SIGTERM"
    )
    print(f"check runs: {last - first} of {due:.0f} due ({ratio:.0%})")
    print(
        "exit after SIGTERM: "
        + ("none within 30 s" if exit_seconds is None else f"{exit_seconds:.2f} s")
        + f", status {monitor.proc.returncode}"
    )
    print(f"procwork_log_lines_dropped_total: {lost}")
    print(f"dropped-lines notices in the output: {[int(n) for n in notices]}")
    ok = ratio >= 0.9 and exit_seconds is not None and exit_seconds <= 2
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
