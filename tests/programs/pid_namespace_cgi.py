"""A rule in a pid namespace, where pid 2 is a web server.

Run as PID 1 of a new pid namespace by ``tests/monitor/test_rules.py``: the
web server is pid 2 and its CGI its child; a rule must kill the CGI (it is
no kernel thread, whatever its parent's pid) and leave the server alone.
Prints the finding's action.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from twisted.internet.task import Clock

from procwork.monitor import Rule
from procwork.monitor._proctable import LinuxProcessTable
from procwork.monitor._rules import RuleEngine

SERVER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "the-cgi"])
time.sleep(60)
"""

if __name__ == "__main__":
    assert os.getpid() == 1, "not in a new pid namespace"
    # The web server is pid 2 here; its CGI is its child.
    server = subprocess.Popen([sys.executable, "-c", SERVER])
    assert server.pid == 2, server.pid
    table = LinuxProcessTable()
    deadline = time.monotonic() + 10
    while not [p for p in table.snapshot() if "the-cgi" in p.cmdline]:
        assert time.monotonic() < deadline, "the CGI did not start"
        time.sleep(0.02)
    found = [p for p in table.snapshot() if "the-cgi" in p.cmdline]
    assert len(found) == 1, found
    [cgi] = found
    assert cgi.ppid == 2 and not cgi.is_kernel_thread
    server_info = table.get(2)
    assert server_info is not None and not server_info.is_kernel_thread
    clock = Clock()
    clock.advance(time.time() + 5)
    rule = Rule("cgi", cmdline=r"\) the-cgi$", max_age=0, action="kill")  # not ours
    [finding] = RuleEngine([rule], table, reactor=clock).check()
    print(finding.action)
    deadline = time.monotonic() + 10
    while (p := table.get(cgi.pid)) is not None and not p.is_dead:
        assert time.monotonic() < deadline, "the CGI still runs"
        time.sleep(0.02)
    assert server.poll() is None, "the web server was touched"
    server.kill()
    server.wait()
