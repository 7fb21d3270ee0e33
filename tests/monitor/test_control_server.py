"""The control socket's server side, on a Clock: requests, and the bounds on clients.

A connection here is the real :class:`ControlServer`'s protocol on a fake
transport that pauses its producer as Twisted's transports do (when more
than ``bufferSize`` bytes wait for the client) and resumes it when the test
says the client has read everything; its peer credentials come from a
socketpair of this very process. Time is a ``Clock``, so idle timeouts and
the close grace are exact and instant. The real socket, with real clients
that stop reading and thousands of connections, is in ``test_ctl_e2e.py``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent

from procwork.monitor._controlserver import (
    CLOSE_GRACE,
    CLOSING_AT_ONCE,
    EVICT_AFTER,
    HEARTBEAT,
    ControlServer,
)
from procwork.monitor._protocol import MAX_LINE, PROTOCOL, decode
from tests.support import observing
from tests.support.fake_monitor import HEADER, Operated, metric_lines, services

_PAIRS: list[tuple[socket.socket, socket.socket]] = []


@pytest.fixture(autouse=True)
def _close_socketpairs() -> Iterator[None]:
    yield
    while _PAIRS:
        for end in _PAIRS.pop():
            end.close()


class PeerTransport(StringTransport):
    """A client's connection: its other end is this very process (a
    socketpair), and it pauses its producer when more than ``bufferSize``
    bytes are unread, as a Twisted transport does when its write buffer is
    full, until :meth:`client_reads`."""

    bufferSize = 1024  # small: a few lines fill it

    def __init__(self) -> None:
        super().__init__()
        self.ends = socket.socketpair(socket.AF_UNIX)
        _PAIRS.append(self.ends)  # closed after the test
        self.unread = 0
        self.full = False
        self.aborted = False

    def getHandle(self) -> socket.socket:
        return self.ends[0]

    def write(self, data: bytes) -> None:
        super().write(data)
        self.unread += len(data)
        full = self.unread > self.bufferSize
        if full and not self.full and self.producer is not None:
            self.full = True
            self.producer.pauseProducing()

    def client_reads(self) -> None:
        """The client reads all that was sent: the producer resumes."""
        self.unread = 0
        if self.full:
            self.full = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def loseConnection(self) -> None:
        super().loseConnection()
        for end in self.ends:
            end.close()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def answers(transport: StringTransport) -> list[dict[str, Any]]:
    return [decode(line) for line in transport.value().splitlines()]


def config(**monitor: object) -> str:
    keys = "".join(f"{key} = {value}\n" for key, value in monitor.items())
    return HEADER + keys + services("web:start_seconds = 0")


class Served(Operated):
    """A Monitor on a Clock, and the server of its control socket."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        super().__init__(tmp_path, text)
        self.server = ControlServer(self.monitor.controller, self.clock)
        self.stats = self.monitor.controller.stats

    def connect(self) -> tuple[Any, PeerTransport]:
        """A new client; a protocol of None: closed as soon as accepted."""
        protocol = self.server.buildProtocol(None)
        transport = PeerTransport()
        if protocol is None:
            transport.loseConnection()  # as the listening port does
        else:
            protocol.makeConnection(transport)
        return protocol, transport


@pytest.fixture
def served(tmp_path: Path) -> Served:
    return Served(tmp_path, config(control_idle_timeout=10))


def connection_timers(served: Served) -> set[Any]:
    """The clock's pending calls but the loop lag's, which re-arms itself
    every 0.25 s (a new call each time) for as long as the monitor runs."""
    return {
        call
        for call in served.clock.getDelayedCalls()
        if getattr(call.func, "__self__", None) is not served.monitor.loop_lag
    }


STATUS = b'{"command": "status", "names": ["web"]}\n'
FOLLOW = b'{"command": "tail", "name": "web", "lines": 0, "follow": true}\n'


# -- requests ----------------------------------------------------------------------


def test_the_server_answers_each_request_line_with_one_line(served: Served) -> None:
    protocol, transport = served.connect()
    protocol.dataReceived(b'{"command": "status", "names": ["web"]}\n{"com')
    [answer] = answers(transport)
    assert answer["ok"] and list(answer["result"]["services"]) == ["web"]
    protocol.dataReceived(b'mand": "launch"}\nnot json\n')
    assert [a["ok"] for a in answers(transport)] == [True, False, False]
    assert answers(transport)[2]["error"].startswith("not a line of JSON")


def test_a_second_request_before_the_first_is_answered_is_refused(
    served: Served,
) -> None:
    protocol, transport = served.connect()
    protocol.dataReceived(b'{"command": "stop", "names": ["web"]}\n')
    protocol.dataReceived(b'{"command": "status"}\n')
    assert answers(transport) == [
        {
            "procwork": PROTOCOL,
            "ok": False,
            "error": "one request at a time: wait for the answer",
        }
    ]
    served.clock.advance(5)
    assert answers(transport)[1]["result"]["services"]["web"]["state"] == "STOPPED"


def test_a_line_too_long_is_answered_and_skipped_and_the_connection_stays_usable(
    served: Served,
) -> None:
    protocol, transport = served.connect()
    for _ in range(3 * MAX_LINE // 4096):  # no newline yet: 3 * MAX_LINE
        protocol.dataReceived(b"x" * 4096)
    too_long = {
        "procwork": PROTOCOL,
        "ok": False,
        "error": f"request longer than {MAX_LINE} bytes; skipped",
    }
    assert answers(transport) == [too_long]  # said once
    assert len(protocol._buffer) <= MAX_LINE  # what it keeps is bounded
    protocol.dataReceived(b"xxx\n" + STATUS)
    assert answers(transport)[1]["ok"] is True
    # All of it in one chunk, newline included: the same.
    protocol.dataReceived(b"y" * (MAX_LINE + 1) + b"\n" + STATUS)
    assert answers(transport)[2:] == [too_long, answers(transport)[1]]
    assert not transport.disconnecting


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"[" * 60000, r"^not a line of JSON: nested more than 8 levels deep$"),
        (b'{"command": "status", "names": ' + b"[" * 60000, r"^not a line of JSON: "),
        (
            b'{"command": "status", "names": ' + b"[" * 60 + b"]" * 60 + b"}",
            r"^a request nests at most 8 levels deep$",
        ),
        (b"\xff\xfe\x00garbage", r"^not a line of JSON: not UTF-8 \(byte 0xff at 0\)$"),
        (b'"status"', r"^expected a JSON object, not str$"),
        (b"[]", r"^expected a JSON object, not list$"),
        (b"", r"^not a line of JSON: "),
        (b'{"command": 7}', r"^unknown command 7; commands: "),
        (b'{"command": "stop", "names": "web"}', r"^stop: names must be a list of "),
        (b'{"command": "stop", "names": [{"a": 1}]}', r"^stop: names must be a list "),
        (b'{"command": "status", "names": ["\\ud800"]}', r"^status: names must be "),
        (b'{"command": "tail", "name": "web", "lines": 1e999}', r"^tail: lines must "),
        (b'{"command": "tail", "name": "web", "lines": NaN}', r"^tail: lines must be "),
        (b'{"command": "signal", "names": ["web"], "signal": 99999}', r"99999"),
        (b'{"command": "signal", "names": ["web"], "signal": "NOPE"}', r"^unknown "),
        (b'{"command": "tail", "lines": 1' + b"0" * 5000 + b"}", r"^not a line of "),
    ],
)
def test_a_hostile_request_gets_an_error_answer_on_the_same_connection(
    served: Served, line: bytes, error: str
) -> None:
    """Never a dropped connection, a traceback or a silence: an answer that
    says what is wrong, and the connection goes on."""
    protocol, transport = served.connect()
    logged: list[dict[str, Any]] = []
    with observing(logged.append):
        protocol.dataReceived(line + b"\n")
    [answer] = answers(transport)
    assert answer["ok"] is False
    assert re.search(error, answer["error"]), answer["error"]
    assert len(answer["error"]) < 400
    assert not any(e.get("log_failure") for e in logged), "no traceback"
    assert not transport.disconnecting
    protocol.dataReceived(STATUS)
    assert answers(transport)[1]["ok"] is True


# -- idle connections ----------------------------------------------------------


def test_a_client_that_says_nothing_is_told_so_and_closed_after_the_idle_timeout(
    served: Served,
) -> None:
    _, transport = served.connect()
    assert served.stats.open == 1
    served.clock.advance(9.9)
    assert not transport.disconnecting
    served.clock.advance(0.1)
    assert transport.disconnecting
    assert answers(transport) == [
        {
            "procwork": PROTOCOL,
            "ok": False,
            "error": "closed: idle for 10 s (control_idle_timeout)",
        }
    ]
    assert (served.stats.open, served.stats.idle_closed) == (0, 1)


def test_the_idle_timeout_counts_from_the_last_request_answered(
    served: Served,
) -> None:
    protocol, transport = served.connect()
    served.clock.advance(9)
    protocol.dataReceived(STATUS)
    served.clock.advance(9)
    protocol.dataReceived(b'{"command": "sta')  # half a request is activity too
    served.clock.advance(9.9)
    assert not transport.disconnecting
    served.clock.advance(0.1)
    assert transport.disconnecting


def test_a_request_being_answered_is_never_idle(tmp_path: Path) -> None:
    served = Served(
        tmp_path,
        HEADER + "control_idle_timeout = 10\n" + services("web:stop_timeout = 100"),
    )
    served.world.current("web").ignores = frozenset({signal.SIGTERM})
    protocol, transport = served.connect()
    protocol.dataReceived(b'{"command": "stop", "names": ["web"]}\n')
    served.clock.advance(99)  # waiting for the stop_timeout, then SIGKILL
    assert not transport.disconnecting and not answers(transport)
    served.clock.advance(1)
    served.clock.advance(0)
    [answer] = answers(transport)
    assert answer["result"]["services"]["web"]["state"] == "STOPPED"
    served.clock.advance(9.9)
    assert not transport.disconnecting
    served.clock.advance(0.1)
    assert transport.disconnecting


def test_a_client_that_reads_no_answers_is_not_read_until_it_does(
    served: Served,
) -> None:
    """Answers cannot pile up: while its write buffer is full, no more of a
    client's requests are read, and so none is answered."""
    served.world.current("web").say(
        b"".join(b"%04d" % n + b"." * 96 + b"\n" for n in range(50))
    )
    protocol, transport = served.connect()
    protocol.dataReceived(b'{"command": "tail", "name": "web", "lines": 50}\n')
    assert transport.full and transport.producerState == "paused"
    protocol.dataReceived(STATUS * 3)  # read by the kernel meanwhile
    assert len(answers(transport)) == 1
    for _ in range(4):  # the client reads until all is answered
        transport.client_reads()
    assert transport.producerState == "producing"
    assert [a["ok"] for a in answers(transport)] == [True] * 4


# -- followers -----------------------------------------------------------------------


def test_a_follower_that_reads_is_never_idle_however_quiet_the_service(
    served: Served,
) -> None:
    web = served.world.current("web")
    web.say(b"old\n")
    protocol, transport = served.connect()
    protocol.dataReceived(b'{"command": "tail", "name": "web", "follow": true}\n')
    web.say(b"new\n")
    web.say(b"not this one\n", fd=2)
    for _ in range(10):  # 50 s of heartbeats: five idle timeouts
        served.clock.advance(HEARTBEAT)
        transport.client_reads()
    assert not transport.disconnecting
    got = answers(transport)
    assert got[0]["result"] == {"name": "web", "lines": ["old"]}
    assert [a.get("line") for a in got if "line" in a] == ["new"]
    assert sum(1 for a in got if a.get("heartbeat")) >= 10
    protocol.connectionLost(None)
    before = len(answers(transport))
    web.say(b"after\n")
    served.clock.advance(3 * HEARTBEAT)
    assert len(answers(transport)) == before  # no line, no heartbeat


def line(n: int) -> bytes:
    return b"line %04d " % n + b"." * 39 + b"\n"  # 50 bytes with its newline


def test_a_follower_that_stops_reading_is_sent_no_more_and_told_what_it_missed(
    served: Served,
) -> None:
    web = served.world.current("web")
    protocol, transport = served.connect()
    protocol.dataReceived(FOLLOW)
    n = 0
    while not transport.full:  # until the client's buffer is full
        web.say(line(n))
        n += 1
    sent = len(transport.value())
    web.say(b"".join(line(n + i) for i in range(1000)))
    served.clock.advance(HEARTBEAT + 1)  # no heartbeat queued either
    assert len(transport.value()) == sent
    transport.client_reads()
    web.say(line(n + 1000))
    got = answers(transport)
    skipped = next(i for i, a in enumerate(got) if "skipped" in a)
    assert [a["line"] for a in got[skipped - 1 : skipped]] == [
        line(n - 1).decode().rstrip("\n")
    ]
    assert got[skipped] == {
        "procwork": PROTOCOL,
        "ok": True,
        "skipped": {"lines": 1000, "bytes": 50 * 1000},
    }
    assert got[skipped + 1]["line"] == line(n + 1000).decode().rstrip("\n")
    assert (served.stats.skipped_lines, served.stats.skipped_bytes) == (1000, 50000)
    assert "procwork_control_follow_lines_skipped_total 1000" in metric_lines(
        served.monitor
    )


def test_a_follower_that_catches_up_in_time_is_not_cut_off(served: Served) -> None:
    web = served.world.current("web")
    protocol, transport = served.connect()
    protocol.dataReceived(FOLLOW)
    for _ in range(5):
        n = 0
        while not transport.full:
            web.say(line(n))
            n += 1
        served.clock.advance(9.9)  # stalled, just under the idle timeout
        transport.client_reads()
    served.clock.advance(30)
    assert not transport.disconnecting


def test_a_follower_stalled_for_the_idle_timeout_is_cut_off_and_told_why(
    served: Served,
) -> None:
    web = served.world.current("web")
    timers = connection_timers(served)
    protocol, transport = served.connect()
    protocol.dataReceived(FOLLOW)
    n = 0
    while not transport.full:
        web.say(line(n))
        n += 1
    served.clock.advance(5)
    web.say(line(n) * 7)
    logged: list[str] = []
    with observing(lambda event: logged.append(formatEvent(event))):
        served.clock.advance(5)
    assert transport.disconnecting
    assert answers(transport)[-1] == {
        "procwork": PROTOCOL,
        "ok": False,
        "error": "cut off: this follower read nothing for 10 s "
        "(control_idle_timeout); 7 lines were not sent to it",
    }
    assert logged == [
        f"control: a follower of 'web' (pid {os.getpid()} uid {os.getuid()}) read "
        "nothing for 10 s (control_idle_timeout) and was cut off; 7 lines were not "
        "sent to it"
    ]
    assert (served.stats.followers_cut, served.stats.open) == (1, 0)
    # No longer following; and a client that takes nothing at all, not even
    # its last line, is cut after the close grace.
    sent = len(transport.value())
    web.say(line(0))
    assert len(transport.value()) == sent
    assert not transport.aborted
    served.clock.advance(CLOSE_GRACE)
    assert transport.aborted
    protocol.connectionLost(None)
    assert connection_timers(served) <= timers, "no timer of it is left"


# -- the connection cap ---------------------------------------------------------


def test_over_the_cap_the_connection_idle_longest_makes_room_and_is_told_why(
    tmp_path: Path,
) -> None:
    served = Served(tmp_path, config(control_max_connections=2))
    _, first = served.connect()
    served.clock.advance(0.5)
    _, second = served.connect()
    served.clock.advance(EVICT_AFTER)
    logged: list[str] = []
    with observing(lambda event: logged.append(formatEvent(event))):
        protocol, third = served.connect()
    assert first.disconnecting and not second.disconnecting
    assert answers(first) == [
        {
            "procwork": PROTOCOL,
            "ok": False,
            "error": "closed: 2 control connections were open, the most allowed "
            "(control_max_connections), and this one was idle longest",
        }
    ]
    protocol.dataReceived(STATUS)
    assert answers(third)[0]["ok"] is True
    assert (served.stats.open, served.stats.evicted) == (2, 1)
    assert logged == [
        "control: 2 connections open, the most allowed (control_max_connections): "
        "idle ones are closed to make room (1 so far), new ones refused when none "
        "is idle (0 so far)"
    ]


def test_over_the_cap_with_none_idle_a_newcomer_is_refused_with_a_busy_line(
    tmp_path: Path,
) -> None:
    """None idle: one answering a request, one follower that reads, or
    connections too young to have sent their request."""
    served = Served(
        tmp_path,
        HEADER + "control_max_connections = 2\n" + services("web:stop_timeout = 100"),
    )
    served.world.current("web").ignores = frozenset({signal.SIGTERM})
    _, young = served.connect()
    protocol, _ = served.connect()
    refusal = {
        "procwork": PROTOCOL,
        "ok": False,
        "error": "the control socket has 2 connections open, its most "
        "(control_max_connections), and none is idle; try again",
        "busy": True,
    }
    _, refused = served.connect()
    assert answers(refused) == [refusal] and refused.disconnecting
    assert not young.disconnecting
    protocol.dataReceived(b'{"command": "stop", "names": ["web"]}\n')  # busy
    served.clock.advance(5 * EVICT_AFTER)
    # The young one, idle now, makes room for a follower that reads...
    reader, reader_transport = served.connect()
    assert young.disconnecting
    reader.dataReceived(FOLLOW)
    served.clock.advance(5 * EVICT_AFTER)
    reader_transport.client_reads()
    # ... and then nobody is idle: a stop being answered, a follower reading.
    _, refused = served.connect()
    assert answers(refused) == [refusal] and refused.disconnecting
    assert (served.stats.refused, served.stats.evicted, served.stats.open) == (2, 1, 2)
    lines = metric_lines(served.monitor)
    assert "procwork_control_connections_refused_total 2" in lines
    assert 'procwork_control_connections_closed_total{reason="evicted"} 1' in lines
    assert "procwork_control_connections 2" in lines
    status = served.monitor.status()["control"]
    assert (status["max_connections"], status["refused"], status["open"]) == (2, 2, 2)


def test_a_flood_over_the_cap_holds_no_more_descriptors_than_cap_and_closing_ones(
    tmp_path: Path,
) -> None:
    """In one reactor turn (no connection lost yet), a hundred newcomers
    over the cap: the first CLOSING_AT_ONCE get their refusal line, the
    rest are closed as soon as accepted; none of them counts as open."""
    served = Served(tmp_path, config(control_max_connections=2))
    served.connect()
    served.connect()
    flood = [served.connect() for _ in range(100)]
    told = [(p, t) for p, t in flood if p is not None]
    assert len(told) == CLOSING_AT_ONCE
    assert all(answers(t)[0]["busy"] for _, t in told)
    assert all(t.disconnecting and not t.value() for p, t in flood if p is None)
    assert (served.stats.refused, served.stats.open) == (100, 2)
    assert served.server.closing == CLOSING_AT_ONCE
    for protocol, _ in told:  # the next turn: their lines are out, closed
        protocol.connectionLost(None)
    assert served.server.closing == 0
    _, transport = served.connect()
    assert answers(transport)[0]["busy"], "told again"
    # Idle ones are closed to make room as long as few are closing.
    served.clock.advance(EVICT_AFTER)
    assert served.connect()[1].disconnecting is False


def test_the_bounds_are_read_from_the_running_config(tmp_path: Path) -> None:
    served = Served(tmp_path, config(control_max_connections=2))
    assert (served.server.max_connections, served.server.idle_timeout) == (2, 60)
    served.path.write_text(config(control_max_connections=5, control_idle_timeout=3))
    assert served.ask(command="reload")["ok"]
    assert (served.server.max_connections, served.server.idle_timeout) == (5, 3)


def test_a_stranger_is_refused_and_takes_no_place(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "procwork.monitor._controlserver.peer_credentials", lambda sock: (7, 4242, 7)
    )
    protocol, transport = served.connect()
    [answer] = answers(transport)
    assert answer["error"].startswith("uid 4242 may not control this monitor")
    assert transport.disconnecting and served.stats.open == 0
    protocol.dataReceived(STATUS)
    assert len(answers(transport)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [15, 16, 17])
def test_a_thousand_clients_coming_and_going_never_hold_more_than_the_cap(
    tmp_path: Path, seed: int
) -> None:
    """Random arrivals, requests, follows, stalls, hang-ups and clock steps:
    at no moment are more connections open than the cap, and every one
    that was made is either open, or was closed for a reason counted."""
    served = Served(tmp_path, config(control_max_connections=8, control_idle_timeout=3))
    rng = random.Random(seed)
    live: list[tuple[Any, PeerTransport]] = []
    made = refused = hung_up = 0
    for _ in range(1000):
        action = rng.random()
        if action < 0.4:
            protocol, transport = served.connect()
            if transport.disconnecting:  # refused
                refused += 1
                if protocol is not None:
                    protocol.connectionLost(None)  # its line sent, next turn
                continue
            made += 1
            live.append((protocol, transport))
        elif action < 0.6 and live:
            protocol, transport = rng.choice(live)
            if not transport.disconnecting:
                protocol.dataReceived(rng.choice([STATUS, FOLLOW, b"[" * 3000 + b"\n"]))
        elif action < 0.7 and live:
            served.world.current("web").say(line(0) * rng.randint(1, 40))
        elif action < 0.8 and live:
            rng.choice(live)[1].client_reads()
        elif action < 0.9 and live:
            protocol, transport = live.pop(rng.randrange(len(live)))
            if not transport.disconnecting:
                hung_up += 1
            protocol.connectionLost(None)
        else:
            served.clock.advance(rng.choice([0.1, 0.5, 1.0, 2.0]))
        for protocol, transport in list(live):
            if transport.disconnecting:  # closed by the server: gone
                live.remove((protocol, transport))
                protocol.connectionLost(None)
        assert served.stats.open <= 8
        assert served.stats.open == len(live)
    stats = served.stats
    assert refused == stats.refused
    closed = stats.evicted + stats.idle_closed + stats.followers_cut
    assert made == len(live) + hung_up + closed
    assert stats.evicted and stats.idle_closed and stats.refused, "all paths taken"
