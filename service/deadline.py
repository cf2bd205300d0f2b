"""A hook call's time budget, shared by everything the call waits on (FHIR fetches first)."""
from __future__ import annotations

import time


class DeadlineExceeded(Exception):
    """The hook call's budget is spent: the service answers no cards rather than late ones."""


class Deadline:
    def __init__(self, seconds: float, clock=time.monotonic):
        self._clock = clock
        self.started = clock()
        self.ends = self.started + seconds

    def remaining(self) -> float:
        return max(0.0, self.ends - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.ends

    def check(self) -> None:
        if self._clock() >= self.ends:
            raise DeadlineExceeded()

    @property
    def budget_ms(self) -> float:
        return (self.ends - self.started) * 1000.0

    def elapsed_ms(self) -> float:
        return (self._clock() - self.started) * 1000.0
