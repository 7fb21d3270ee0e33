"""An asyncio program waiting on its procwork children, for a signal to end it.

Run by ``tests/procwork/test_asyncio.py``. Inside ``asyncio.run`` it starts
a tree (a shell with a ``sleep 60`` in the background) and a child that
ignores SIGTERM, prints the pids of the tree's leader, its grandchild and
the stubborn child on one line, then awaits both (at most 60 s) until the
test's SIGINT or SIGTERM ends it.
"""

from __future__ import annotations

import asyncio

import procwork


async def main() -> None:
    tree = procwork.spawn(["sh", "-c", "sleep 60 & echo $!; wait"])
    stubborn = procwork.spawn(
        ["sh", "-c", "trap '' TERM; echo ready; sleep 60"], grace=1
    )
    # Both asked for now: a line is kept for readline() from its first call.
    first_lines = asyncio.gather(tree.readline(), stubborn.readline())
    grandchild = int((await first_lines)[0])
    print(tree.pid, grandchild, stubborn.pid, flush=True)
    await asyncio.wait_for(asyncio.gather(tree.wait(), stubborn.wait()), 60)


if __name__ == "__main__":
    # A busy test machine must not queue the children (the loop's scheduler
    # starts with the limits of the program's).
    procwork.scheduler().load = procwork.NoLoadLimit()
    asyncio.run(main())
