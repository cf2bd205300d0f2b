"""The local engine: one machine, a pool of forked processes.

A first pass in the parent notes, per patient, where each of their resources lies (export.scan:
file, offset, length; orjson); the parent then loads the runtime (the tabular, about 2 s and
175 MB) and forks the workers, which share it copy-on-write (gc.freeze first, so the collector's
writes do not unshare it). Each worker reads its patients back by offset (pread) and audits them;
nothing is written but the outputs.

A worker process that dies (a segfault in a C extension, the OOM killer) breaks a
ProcessPoolExecutor at once, where multiprocessing.Pool waited forever. The work lost with it is
done again: the chunks that were in flight, one patient a job, then each patient lost a second
time alone in a pool of its own; a patient whose worker dies when it runs alone is reported as
"worker died" and the audit goes on.
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from . import patient as one
from .export import read_resources, scan

CHUNK = 8  # patients a job: fewer round trips to the workers
WORKER_DIED = "worker died"


def _audit_chunk(chunk: list[tuple[str, list]]) -> list[tuple[str, list[dict] | dict]]:
    return [(patient, one.evaluate(patient, lambda places=places: read_resources(places))) for patient, places in chunk]


class Progress:
    """`audit: patients done/total (%), cards, patients/s` on stderr: one line rewritten on a terminal
    (at most every half second), else a line every 5 seconds; and the last."""

    def __init__(self, stream, total: int, started: float, unit: str = "patients"):
        self.stream, self.total, self.started, self.unit = stream, total, started, unit
        self.done = self.cards = self.patients = 0
        self.total_patients = total if unit == "patients" else None
        self.tty = bool(stream) and hasattr(stream, "isatty") and stream.isatty()
        self.shown = 0.0

    def add(self, done: int, patients: int, cards: int) -> None:
        self.done += done
        self.patients += patients
        self.cards += cards
        now = time.monotonic()
        if self.stream and (now - self.shown > (0.5 if self.tty else 5.0) or self.done == self.total):
            self.shown = now
            rate = self.patients / max(now - self.started, 1e-6)
            counted = "" if self.unit == "patients" else f", patients {self.patients}" + (
                f"/{self.total_patients}" if self.total_patients is not None else "")
            line = (f"audit: {self.unit} {self.done}/{self.total} ({100 * self.done // max(self.total, 1)} %)"
                    f"{counted}, cards {self.cards}, {rate:.1f} patients/s")
            print(f"\r\033[K{line}" if self.tty else line, end="" if self.tty else "\n", file=self.stream, flush=True)

    def end(self) -> None:
        if self.stream and self.tty:
            print(file=self.stream, flush=True)


def _drain(jobs: deque, workers: int, window: int, take) -> list:
    """Runs `jobs` on a fresh pool of `workers` forked processes, at most `window` in flight, giving
    each result to `take`; returns the jobs lost when a worker died (those in flight then)."""
    lost: list = []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        inflight: dict = {}
        broken = False
        while (jobs and not broken) or inflight:
            while jobs and not broken and len(inflight) < window:
                job = jobs.popleft()
                try:
                    inflight[pool.submit(_audit_chunk, job)] = job
                except BrokenProcessPool:
                    jobs.appendleft(job)
                    broken = True
            if not inflight:
                break
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for future in finished:
                job = inflight.pop(future)
                try:
                    take(future.result())
                except BrokenProcessPool:
                    lost.append(job)
                    broken = True
            if broken:  # the rest of what was in flight is lost with the pool
                for future, job in inflight.items():
                    try:
                        take(future.result())
                    except BrokenProcessPool:
                        lost.append(job)
                inflight.clear()
    return lost


def run_local(path: Path, workers: int, progress, started: float, settings=None) -> dict:
    patients, resources, unread_lines = scan(path)
    one.load_runtime(settings)  # here, before the fork: the workers share it
    gc.collect()
    gc.freeze()  # the runtime's objects out of the collector's scans: its writes would unshare the pages
    shown = Progress(progress, len(patients), started)
    rows: list[dict] = []
    unread: list[dict] = []

    def take(results) -> None:
        cards = 0
        for _patient, outcome in results:
            if isinstance(outcome, dict):  # could not be read: reported, skipped
                unread.append(outcome)
                continue
            rows.extend(outcome)
            cards += sum(1 for r in outcome if r["rule"] != "(not evaluated)")
        shown.add(len(results), len(results), cards)

    items = list(patients.items())
    try:
        jobs = deque(items[i:i + CHUNK] for i in range(0, len(items), CHUNK))
        lost: list = []
        while jobs:  # a pool that broke is replaced, and goes on with the jobs not yet given out
            lost += _drain(jobs, workers, 2 * workers, take)
        jobs, lost = deque([p] for chunk in lost for p in chunk), []
        while jobs:  # the lost chunks again, one patient a job: a death narrows it to the `workers` in flight
            lost += _drain(jobs, workers, workers, take)
        for job in lost:  # alone: a worker that dies now died of this patient
            if _drain(deque([job]), 1, 1, take):
                unread.append(one.unread(job[0][0], "evaluating", WORKER_DIED))
                shown.add(1, 1, 0)
    finally:
        gc.unfreeze()
        shown.end()
    return {"rows": rows, "unread_lines": unread_lines, "unread_patients": unread, "patients": len(patients),
            "resources": resources, "workers": workers}


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

