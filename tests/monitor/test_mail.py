"""Mail alerts: an event as a message, through a real SMTP server, bounded.

The server is aiosmtpd (a real ESMTP server, from the ``test`` extra) on
loopback, in a thread; the bad servers (one that never answers, one that
talks without end, a port nobody listens on) are plain sockets
(:mod:`tests.support.smtp`). The alerts run on the real reactor; every wait
is bounded, and what the client read is checked as an amount, not a time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from procwork import ConfigError
from procwork.monitor import AlertSpec, parse_config
from procwork.monitor._alerts import AlertDispatcher, Event
from procwork.monitor._http import prometheus_text
from procwork.monitor._mail import (
    MAX_SERVER_BYTES,
    MailServer,
    ServerTooChatty,
    compose,
    send_mail,
)
from procwork.monitor._metrics import monitor_metrics
from tests.support import cpu_load, drive_until, global_reactor, wait
from tests.support.smtp import ChattyServer, SilentServer, SmtpServer

#: What one read of the client takes at most (Twisted's TCP read size).
ONE_READ = 65536

HOST = socket.gethostname()

pytestmark = pytest.mark.slow  # real servers, real sockets


@pytest.fixture
def servers() -> Iterator[Callable[..., Any]]:
    """Starts the servers a test asks for; each is closed at the end."""
    started: list[Any] = []

    def start(kind: type = SmtpServer, **kwargs: Any) -> Any:
        started.append(kind(**kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.close()


def fatal(name: str = "web") -> Event:
    return Event(
        "service.fatal",
        name,
        "FATAL",
        f"service {name!r} exited 3; given up, it is FATAL",
        time=1_700_000_000.0,
        exit_status=3,
        output="Traceback (most recent call last):\nValueError: no config\n",
        fields={"pid": 4242, "restarts": 5},
    )


def mailer(address: str, **changes: Any) -> AlertSpec:
    host, port = address.rsplit(":", 1)
    values: dict[str, Any] = {
        "name": "ops",
        "mail": ["ops@example.com", "oncall@example.com"],
        "smtp": MailServer(host, int(port), sender="monitor@example.com"),
        "timeout": 20,
        **changes,
    }
    return AlertSpec(**values)


def details(body: str) -> dict[str, str]:
    """The ``  key: value`` lines of a message's body."""
    found = {}
    for line in body.splitlines():
        if line.startswith("  ") and ":" in line:
            key, _, value = line.partition(":")
            found[key.strip()] = value.strip()
    return found


def delivered(alerts: AlertDispatcher, count: int = 1, name: str = "ops") -> Any:
    """Wait (bounded) until ``count`` deliveries of alert ``name`` ended."""
    status = alerts.status[name]
    assert drive_until(lambda: status.ok + status.failed >= count, timeout=40), status
    return status


# -- a real server takes the message ---------------------------------------------


def test_a_mail_alert_sends_the_event_to_every_address_saying_what_happened(
    servers: Callable[..., Any],
) -> None:
    """Subject and first line say what happened in words; the body names
    the service, its state, the host, the exit and the output's end."""
    smtp = servers()
    alerts = AlertDispatcher([mailer(smtp.address)])
    alerts.emit(fatal())
    status = delivered(alerts)
    assert (status.sent, status.ok, status.failed) == (1, 1, 0)
    assert status.last_result == (
        f"mail accepted by {smtp.address} for 2 addresses: 250 2.0.0 Ok: queued as 42"
    )
    [received] = smtp.received()
    assert received.sender == "monitor@example.com"
    assert received.recipients == ("ops@example.com", "oncall@example.com")
    message = received.message
    assert message["Subject"] == (
        f"[procwork {HOST}] service 'web' exited 3; given up, it is FATAL"
    )
    assert message["From"] == "monitor@example.com"
    assert message["To"] == "ops@example.com, oncall@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Procwork-Event"] == "service.fatal"
    lines = received.body.splitlines()
    assert lines[0] == "service 'web' exited 3; given up, it is FATAL"
    assert details(received.body) == {
        "event": "service.fatal",
        "service": "web",
        "state": "FATAL",
        "host": HOST,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(1_700_000_000)),
        "exit status": "3",
        "pid": "4242",
        "restarts": "5",
    }
    assert lines[lines.index("The end of its output:") + 2 :][:2] == [
        "Traceback (most recent call last):",
        "ValueError: no config",
    ]
    assert lines[-1] == f"procwork monitor on {HOST}, alert 'ops'"


def test_a_check_reminder_says_which_check_and_that_it_is_still_failing(
    servers: Callable[..., Any],
) -> None:
    smtp = servers()
    alerts = AlertDispatcher([mailer(smtp.address, mail="ops@example.com")])
    alerts.emit(
        Event(
            "check.failed",
            "disk",
            "failing",
            "check disk still failing (12 runs in a row): exited 1",
            reminder=True,
        )
    )
    delivered(alerts)
    [received] = smtp.received()
    assert received.recipients == ("ops@example.com",)
    assert received.message["Subject"] == (
        f"[procwork {HOST}] check disk still failing (12 runs in a row): exited 1"
    )
    told = details(received.body)
    assert told["check"] == "disk"
    assert told["event"] == "check.failed (a reminder: still so)"


def test_the_smtp_server_and_sender_of_a_config_reach_its_mail_alerts(
    servers: Callable[..., Any],
) -> None:
    smtp = servers()
    config = parse_config(
        f"""
        [monitor]
        smtp = "{smtp.address}"
        smtp_from = "watchdog@example.com"

        [[alert]]
        name = "ops"
        events = ["service.*"]
        mail = "ops@example.com"
        """.replace("\n        ", "\n"),
        "m.toml",
    )
    [spec] = config.alerts
    assert spec.smtp == MailServer("127.0.0.1", smtp.port, "watchdog@example.com")
    alerts = AlertDispatcher(config.alerts)
    alerts.emit(fatal())
    delivered(alerts)
    [received] = smtp.received()
    assert received.sender == "watchdog@example.com"
    assert received.message["From"] == "watchdog@example.com"


# -- a server that refuses ----------------------------------------------------------


def test_a_5xx_refusal_fails_the_delivery_at_once_counted_and_not_retried(
    servers: Callable[..., Any],
) -> None:
    """A permanent refusal would be refused again: one attempt, whatever
    ``retries`` says; the failure is in the status and the metrics."""
    smtp = servers(refuse="554 5.7.1 relaying denied")
    alerts = AlertDispatcher([mailer(smtp.address, retries=3, retry_delay=0)])
    alerts.emit(fatal())
    status = delivered(alerts)
    assert (status.sent, status.ok, status.failed) == (1, 0, 1)
    assert status.last_result == (
        f"mail refused: 554 5.7.1 relaying denied (by {smtp.address})"
    )
    assert smtp.received() == []
    text = prometheus_text(
        monitor_metrics(
            version="0",
            services={},
            checks={},
            rules={},
            queued=0,
            alerts=alerts.status,
        )
    )
    assert 'procwork_alert_deliveries_total{alert="ops",outcome="failed"} 1' in text
    assert 'procwork_alert_deliveries_total{alert="ops",outcome="ok"} 0' in text


def test_an_address_refused_fails_the_delivery_naming_it_and_is_not_sent_twice(
    servers: Callable[..., Any],
) -> None:
    """The other address has the message: trying again would send it twice."""
    smtp = servers(refuse_addresses=("oncall@example.com",))
    alerts = AlertDispatcher([mailer(smtp.address, retries=3, retry_delay=0)])
    alerts.emit(fatal())
    status = delivered(alerts)
    assert (status.ok, status.failed) == (0, 1)
    assert status.last_result == (
        "mail accepted for 1 of 2 addresses; refused oncall@example.com: 550 "
        f"5.1.1 no such mailbox here (by {smtp.address})"
    )
    [received] = smtp.received()
    assert received.recipients == ("ops@example.com",)


def test_a_port_nobody_listens_on_is_retried_then_the_delivery_fails() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    alerts = AlertDispatcher([mailer(f"127.0.0.1:{port}", retries=2, retry_delay=0.05)])
    alerts.emit(fatal())
    status = delivered(alerts)
    assert (status.sent, status.failed) == (1, 1)
    assert status.last_result.startswith("mail gave up after 3 attempts: ")
    assert "refused" in status.last_result


# -- a server that stalls or talks without end ---------------------------------------


def test_a_server_that_never_answers_times_out_each_attempt_and_is_hung_up_on(
    servers: Callable[..., Any],
) -> None:
    silent = servers(SilentServer)
    alerts = AlertDispatcher(
        [mailer(silent.address, timeout=0.3, retries=1, retry_delay=0)]
    )
    alerts.emit(fatal())
    status = delivered(alerts)
    assert (status.sent, status.failed) == (1, 1)
    assert status.last_result == "mail gave up after 2 attempts: no answer within 0.3 s"
    # Both attempts' connections were closed by the monitor, none is held.
    assert drive_until(
        lambda: len(silent.accepted) == 2 and silent.closed_by_peer() == 2, timeout=10
    ), (len(silent.accepted), silent.closed_by_peer())


def test_a_server_that_talks_without_end_is_read_64_KiB_then_hung_up_on(
    servers: Callable[..., Any],
) -> None:
    chatty = servers(ChattyServer)
    outcome = send_mail(
        global_reactor(),
        MailServer("127.0.0.1", chatty.port),
        ("ops@example.com",),
        b"Subject: x\n\nx\n",
    )
    with pytest.raises(ServerTooChatty, match=r"said more than 65536 bytes") as info:
        wait(outcome)
    assert MAX_SERVER_BYTES < info.value.received <= MAX_SERVER_BYTES + ONE_READ
    assert drive_until(chatty.hung_up.is_set, timeout=10)


def test_a_chatty_server_fails_the_delivery_saying_so(
    servers: Callable[..., Any],
) -> None:
    chatty = servers(ChattyServer)
    alerts = AlertDispatcher([mailer(chatty.address, retries=0)])
    alerts.emit(fatal())
    status = delivered(alerts)
    assert status.last_result == (
        "mail gave up after 1 attempts: the server said more than 65536 bytes; "
        "connection closed"
    )


def test_a_storm_of_mail_holds_at_most_max_in_flight_connections_and_drops_the_rest(
    servers: Callable[..., Any],
) -> None:
    """Twenty events to a server that hangs: two connections, five queued,
    thirteen dropped and counted; stopping cancels the two and closes them."""
    silent = servers(SilentServer)
    alerts = AlertDispatcher(
        [mailer(silent.address, timeout=60, max_in_flight=2, max_queued=5)]
    )
    for i in range(20):
        alerts.emit(fatal(f"web-{i}"))
    status = alerts.status["ops"]
    assert drive_until(lambda: len(silent.accepted) == 2, timeout=10)
    drive_until(lambda: False, timeout=0.3)  # the reactor runs on a while:
    assert len(silent.accepted) == 2
    assert (status.running, status.queued, status.dropped) == (2, 5, 13)
    wait(alerts.stop(timeout=0.2))
    assert (status.running, status.failed) == (0, 2)
    assert status.last_result == "cancelled (monitor stopping)"
    assert status.dropped == 18
    assert drive_until(lambda: silent.closed_by_peer() == 2, timeout=10)


# -- under load, by the hundred --------------------------------------------------


def test_hundreds_of_mails_under_cpu_load_are_each_delivered_once_none_stuck(
    servers: Callable[..., Any],
) -> None:
    """200 events through four slots to a real server, with every core
    busy: each is one message, each delivery ends, no connection is left."""
    smtp = servers()
    alerts = AlertDispatcher([mailer(smtp.address, max_in_flight=4, max_queued=200)])
    with cpu_load():
        for i in range(200):
            alerts.emit(fatal(f"web-{i}"))
        status = delivered(alerts, 200)
    assert (status.sent, status.ok, status.failed, status.dropped) == (200, 200, 0, 0)
    assert (status.running, status.queued) == (0, 0)
    names = sorted(m.message["Subject"].split("'")[1] for m in smtp.received())
    assert names == sorted(f"web-{i}" for i in range(200))


def test_hundreds_of_attempts_timing_out_while_connecting_or_connected_all_end(
    servers: Callable[..., Any],
) -> None:
    """A timeout lands before the connection is made, as it is made, or
    while the server is silent: 300 deliveries under CPU load each end,
    failed and counted, and the monitor holds none of their connections."""
    silent = servers(SilentServer)
    alerts = AlertDispatcher(
        [
            mailer(
                silent.address,
                timeout=0.01,
                retries=0,
                max_in_flight=16,
                max_queued=300,
            )
        ]
    )
    with cpu_load():
        for i in range(300):
            alerts.emit(fatal(f"web-{i}"))
        status = delivered(alerts, 300)
    assert (status.sent, status.failed, status.ok) == (300, 300, 0)
    assert (status.running, status.queued) == (0, 0)
    # Every connection the server accepted was closed by the client.
    assert drive_until(
        lambda: silent.closed_by_peer() == len(silent.accepted), timeout=20
    ), (len(silent.accepted), silent.closed_by_peer())


# -- the message ---------------------------------------------------------------


def test_a_message_keeps_its_lines_short_and_its_subject_on_one_cut_line() -> None:
    """A long or non-ASCII output is encoded so SMTP lines stay under 1000
    characters, and decodes to what the service printed."""
    import email
    import email.policy

    output = "é" * 3000 + "\n" + "x" * 5000
    event = Event(
        "check.failed",
        "disk",
        "failing",
        "line one\nline two " + "y" * 300,
        output=output,
    )
    data = compose(event, sender="a@b.c", recipients=("d@e.f",), alert="ops")
    assert max(len(line) for line in data.split(b"\n")) < 1000
    message = email.message_from_bytes(data, policy=email.policy.default)
    subject = str(message["Subject"])
    assert subject.startswith(f"[procwork {HOST}] line one line two yyy")
    assert len(subject) == 160 and subject.endswith("...")
    body = message.get_body(("plain",))
    assert body is not None
    assert output[-2000:] in body.get_content()


# -- the config ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '[[alert]]\nname = "ops"\nmail = "ops@example.com"\n',
            r"^m\.toml: \[\[alert\]\] #1 \('ops'\): mail needs the SMTP server to "
            r'send it through: smtp = "HOST:PORT" in \[monitor\]',
        ),
        (
            '[monitor]\nsmtp = "localhost:25"\n'
            '[[alert]]\nname = "ops"\nmail = ["ops@example.com", "oncall"]\n',
            r"^m\.toml: \[\[alert\]\] #1 \('ops'\): mail has 'oncall', which is not "
            r"a mail address like 'ops@example.com'$",
        ),
        (
            '[monitor]\nsmtp = "localhost:25"\n[[alert]]\nname = "ops"\nmail = []\n',
            r"^m\.toml: \[\[alert\]\] #1 \('ops'\): mail must be a list of mail "
            r"addresses, not \[\]$",
        ),
        (
            '[monitor]\nsmtp = "localhost:25"\n[[alert]]\nname = "ops"\n'
            'mail = "ops@example.com"\nwebhook = "http://127.0.0.1:9/"\n',
            r"^m\.toml: \[\[alert\]\] #1 \('ops'\): needs a command, a webhook or "
            r"mail \(one of them; for two, write two alerts\)$",
        ),
        (
            '[monitor]\nsmtp = "mail.example.com:0"\n',
            r"^m\.toml: \[monitor\]: smtp must be HOST:PORT of an SMTP server like "
            r"'127\.0\.0\.1:25' or 'mail\.example\.com:587' \(port 1 to 65535\), "
            r"not 'mail\.example\.com:0'$",
        ),
        (
            '[monitor]\nsmtp = "mail example com"\n',
            r"^m\.toml: \[monitor\]: smtp must be HOST:PORT .* not 'mail example com'$",
        ),
        (
            '[monitor]\nsmtp_from = "procwork at example.com"\n',
            r"^m\.toml: \[monitor\]: smtp_from must be a mail address like "
            r"'ops@example\.com', not 'procwork at example\.com'$",
        ),
    ],
)
def test_a_bad_mail_setting_is_refused_naming_the_file_the_entry_and_the_key(
    text: str, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_config(text, "m.toml")


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("mail.example.com", ("mail.example.com", 25)),
        ("[::1]:587", ("::1", 587)),
        ("[::1]", ("::1", 25)),
    ],
)
def test_smtp_is_host_and_port_with_25_when_left_out(
    value: str, address: tuple[str, int]
) -> None:
    config = parse_config(f'[monitor]\nsmtp = "{value}"\n', "m.toml")
    assert config.smtp == address


def test_without_smtp_from_the_sender_is_procwork_at_the_hosts_name() -> None:
    sender = MailServer("127.0.0.1", 25).sender_address()
    assert sender in (f"procwork@{HOST}", "procwork@localhost")
