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
