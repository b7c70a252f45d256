"""Polling for the tests that start servers: wait until a condition holds, or give up."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float) -> bool:
    """True once `predicate()` is truthy (checked every 0.5 s), False after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False
