"""A least-recently-used cache bounded by entries *and* by bytes.

The service keeps three per-process caches (parsed FHIR resources, the findings of each text, the
analysis of each sentence) so that the same record sent at order-select, order-sign and
encounter-sign costs little the second time. Bounded by entries alone, a worker that was sent a
few hundred 5 MB notes kept them all; each cache here also has a byte budget, charged by an
estimate of what an entry holds, and evicts the oldest entries past either bound. An entry larger
than the whole budget is not kept at all. Thread-safe (gunicorn's threaded workers, the
development server).
"""
from __future__ import annotations

import threading
from collections import OrderedDict


class BoundedCache:
    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict = OrderedDict()  # key → (value, nbytes)
        self._lock = threading.Lock()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key, value, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return  # larger than the whole budget: kept by no one
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (value, nbytes)
            self.bytes += nbytes
            while self._entries and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
                _, (_, size) = self._entries.popitem(last=False)
                self.bytes -= size
                self.evicted += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def describe(self) -> dict:
        return {"entries": len(self._entries), "maxEntries": self.max_entries, "bytes": self.bytes,
                "maxBytes": self.max_bytes, "evicted": self.evicted}
