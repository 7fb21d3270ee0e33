"""Fixtures shared by the test modules; plain helpers are in ``tests/support.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import no_load_limit


@pytest.fixture
def no_load_gate() -> Iterator[None]:
    """The global scheduler has no load gate while the test runs.

    For tests that are not about load: a busy test machine must not queue
    them. A module opts in with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    with no_load_limit():
        yield


@pytest.fixture(autouse=True, scope="session")
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Monitors started by the tests put their default control socket in a
    directory of this test session's own, not in the user's runtime directory,
    where a real monitor (or another test session) may be listening."""
    import os

    runtime = tmp_path_factory.mktemp("runtime")
    runtime.chmod(0o700)
    before = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        yield
    finally:
        if before is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = before
