"""Garbage collection off the clinician's wait, in served workers.

The caches (parsed resources, texts, sentences) hold hundreds of thousands of objects; a full
collection over them took 23-25 ms every ~150 requests, inside whichever hook call happened to
trigger it: the p99. A served worker turns automatic collection off after the fork
(`in_worker`), and collects after each answer has been sent (`after_response`, on the
response's close), with the interpreter's own thresholds: the young generation when it has grown
past its threshold, the middle one every tenth time, and a full collection every
`FULL_EVERY` answers. Outside a served worker (tests, the CLI) nothing changes.
"""
from __future__ import annotations

import gc

FULL_EVERY = 500
_state = {"managed": False, "young": 0, "answers": 0}


def in_worker() -> None:
    gc.disable()
    _state["managed"] = True


def after_response() -> None:
    if not _state["managed"]:
        return
    _state["answers"] += 1
    if _state["answers"] % FULL_EVERY == 0:
        gc.collect(2)
        return
    threshold = gc.get_threshold()[0]
    if gc.get_count()[0] > threshold:
        _state["young"] += 1
        gc.collect(1 if _state["young"] % 10 == 0 else 0)
