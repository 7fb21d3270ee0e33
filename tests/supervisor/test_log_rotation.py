"""Rotation keeps a service's lines whole, however its output is chunked.

A child writing to a pipe is block-buffered: its output comes in 4 or 8 KiB
chunks cut anywhere in a line. A :class:`LogFile` rotated by size used to
write a chunk's end (half a line) into one file and the rest of the line,
with the next chunk, into the next. Now the end of a line waits (per
stream, at most ``MAX_PARTIAL`` bytes) for its newline, and a line that
does not fit goes whole into the next file. Unit tests on a ``Clock``, and
a real block-buffered child under a real :class:`Supervisor`.
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from procwork.supervisor import ServiceSpec, Supervisor
from procwork.supervisor._logfile import MAX_PARTIAL, LogFile, LogTrouble
from tests.support import PY, drive_until, wait


def log_file(path: Path, max_bytes: int, **kwargs: int) -> LogFile:
    reports: list[LogTrouble] = []
    return LogFile(
        str(path),
        max_bytes,
        10_000,  # backups: every file kept, to read them all back
        clock=Clock().seconds,
        report=reports.append,
        **kwargs,
    )


def varied_lines(count: int, seed: int = 16) -> list[bytes]:
    """``count`` numbered lines of 10 to 300 bytes."""
    rng = random.Random(seed)
    return [
        f"line {i:05d} {'x' * rng.randrange(0, 290)}\n".encode() for i in range(count)
    ]


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into pieces of the ``sizes`` in turn, wherever they fall."""
    pieces, start, i = [], 0, 0
    while start < len(data):
        pieces.append(data[start : start + sizes[i % len(sizes)]])
        start += sizes[i % len(sizes)]
        i += 1
    return pieces


def files_in_order(path: Path) -> list[bytes]:
    """The contents of ``path.N``, ..., ``path.1``, ``path``: oldest first."""
    rotated = sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")),
        key=lambda p: int(p.name.rpartition(".")[2]),
        reverse=True,
    )
    return [p.read_bytes() for p in [*rotated, path]]


@pytest.mark.parametrize("sizes", [[4096], [8192], [1, 7, 4093, 333], [100_000]])
def test_block_buffered_output_cut_anywhere_rotates_into_files_of_whole_lines(
    tmp_path: Path, sizes: list[int]
) -> None:
    lines = varied_lines(3000)
    log = log_file(tmp_path / "web.log", max_bytes=2000)
    for piece in chunks(b"".join(lines), sizes):
        log.write(piece)
        assert log.held < MAX_PARTIAL
    log.close()
    files = files_in_order(tmp_path / "web.log")
    assert len(files) > 100  # rotated all along
    assert b"".join(files) == b"".join(lines)  # nothing lost, nothing doubled
    for content in files:
        assert len(content) <= 2000
        assert content.endswith(b"\n")  # each file ends with a whole line
        assert all(line + b"\n" in lines for line in content.split(b"\n")[:-1])


def test_two_streams_sharing_a_file_each_get_their_lines_whole(
    tmp_path: Path,
) -> None:
    log = log_file(tmp_path / "both.log", max_bytes=1 << 20)
    log.write(b"out one\nout tw", stream=1)
    log.write(b"err one\nerr t", stream=2)
    log.write(b"o\n", stream=1)
    log.write(b"wo\n", stream=2)
    log.close()
    assert (tmp_path / "both.log").read_bytes() == (
        b"out one\nerr one\nout two\nerr two\n"
    )


def test_the_end_of_a_line_without_its_newline_is_written_when_the_run_ends(
    tmp_path: Path,
) -> None:
    log = log_file(tmp_path / "web.log", max_bytes=1 << 20)
    log.write(b"starting\nprompt> ")
    assert (tmp_path / "web.log").read_bytes() == b"starting\n"
    assert log.held == len(b"prompt> ")
    log.flush()  # the process ended (ServiceOutput.ended)
    assert (tmp_path / "web.log").read_bytes() == b"starting\nprompt> "
    assert log.held == 0
    log.close()


def test_what_waits_for_a_newline_is_capped_and_a_longer_line_is_written_as_it_comes(
    tmp_path: Path,
) -> None:
    log = log_file(tmp_path / "web.log", max_bytes=1 << 20, max_partial=1000)
    for _ in range(50):
        log.write(b"z" * 300)  # 15 000 bytes of one line, never ended
        assert log.held <= 1000
    log.close()
    assert (tmp_path / "web.log").read_bytes() == b"z" * 15_000


def test_only_a_line_longer_than_a_whole_file_is_cut(tmp_path: Path) -> None:
    log = log_file(tmp_path / "web.log", max_bytes=1000)
    log.write(b"short\n" + b"L" * 2500 + b"\nafter\n")
    log.close()
    files = files_in_order(tmp_path / "web.log")
    # The long line starts a file of its own, and fills whole ones.
    assert files == [b"short\n", b"L" * 1000, b"L" * 1000, b"L" * 500 + b"\nafter\n"]


CHILD = textwrap.dedent(
    """
    import random, sys
    rng = random.Random(16)
    for i in range(20000):
        print(f"line {i:05d} {'x' * rng.randrange(0, 290)}")
    print("done", file=sys.stderr)
    """
)


@pytest.mark.slow
def test_a_block_buffered_child_under_a_supervisor_leaves_whole_lines_in_every_file(
    tmp_path: Path,
) -> None:
    """Its stdout is a pipe: Python writes it in 8 KiB blocks."""
    log = tmp_path / "logs" / "chatty.log"
    spec = ServiceSpec(
        "chatty",
        [PY, "-c", CHILD],  # no -u: block-buffered
        stdout_log=str(log),
        stderr_log=str(log),
        log_max_bytes=20_000,
        log_backups=10_000,
        restart="never",
        start_seconds=0,
        console_rate=0,  # the files only
    )
    supervisor = Supervisor()
    supervisor.add(spec)
    supervisor.start()
    try:
        assert drive_until(
            lambda: supervisor.status()["chatty"].state == "EXITED", timeout=120
        )
    finally:
        wait(supervisor.stop(), 30)
    files = files_in_order(log)
    assert len(files) > 100
    expected = varied_lines(20_000)
    written = b"".join(files).split(b"\n")
    assert written.pop() == b""
    written.remove(b"done")  # stderr's line, written when it came
    assert [line + b"\n" for line in written] == expected
    for content in files:
        assert content.endswith(b"\n") and len(content) <= 20_000
