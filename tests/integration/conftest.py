"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    """Every daemon process a test starts (append it here) is killed, with its process
    group, at teardown, whatever the test did."""
    started: list[Any] = []
    yield started
    for d in started:
        d.kill()
