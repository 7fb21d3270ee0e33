"""A container's command that orphans grandchildren.

Run by ``tests/procwork/test_orphans.py`` as the command of ``procwork run``,
which is PID 1 of a new pid namespace: it leaves 30 short sleeps behind
(half of them leading their own session), then prints how many zombies
PID 1 has a second later.
"""

from __future__ import annotations

import subprocess
import time

if __name__ == "__main__":
    for _ in range(15):  # each leaves a sleep to PID 1, which is procwork run
        subprocess.run(["sh", "-c", "sleep 0.01 &"], check=True)
        # this one leads its own session: only all_children reaps it
        subprocess.run(["sh", "-c", "setsid sleep 0.01 &"], check=True)
    time.sleep(1)
    with open("/proc/1/task/1/children") as f:
        pids = f.read().split()
    states = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            states.append(f.read().rpartition(")")[2].split()[0])
    print("zombies of PID 1:", states.count("Z"))
