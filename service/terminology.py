"""ICD-10-CM from the CDC tabular (simple-icd-10-cm, April 2026), loaded once per process.

The import costs about 1.8 s and 175 MB (engineering-notes.md): `serve` loads it before
gunicorn forks its workers, never per request.
"""
from __future__ import annotations

import threading
import time


class Terminology:
    def __init__(self):
        self._cm = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    def load(self) -> "Terminology":
        with self._lock:
            if self._cm is None:
                started = time.perf_counter()
                import simple_icd_10_cm as cm  # noqa: PLC0415 - deliberately loaded on demand
                self._cm = cm
                self.load_seconds = time.perf_counter() - started
        return self

    @property
    def loaded(self) -> bool:
        return self._cm is not None

    @property
    def release(self) -> str:
        return "ICD-10-CM FY2026 (April 1, 2026), CDC tabular via simple-icd-10-cm 1.5.0"

    def _tabular(self):
        if self._cm is None:
            self.load()
        return self._cm

    def is_billable(self, code: str) -> bool:
        """A leaf of the tabular: the only kind of code a card may propose."""
        cm = self._tabular()
        return cm.is_valid_item(code) and cm.is_leaf(code)

    def exists(self, code: str) -> bool:
        return self._tabular().is_valid_item(code)

    def display(self, code: str) -> str:
        return self._tabular().get_description(code)
