"""The Dask engine: the export read, grouped by patient and audited on a Dask distributed cluster.

- **Reading** happens on the workers: each NDJSON file is cut into blocks of `blocksize` bytes at line
  ends (fsspec: a local folder, file://, or any URL fsspec reads, e.g. s3:// with s3fs installed),
  each block a task that parses its lines with orjson (`export.owner_of_line`, as the local engine)
  and gives (patient, position, line) for each resource. A Bundle (.json) is one task.
- **Grouping** by patient is the engine's: `Bag.groupby(..., shuffle="tasks")`, a shuffle of the
  raw lines (bytes move between workers, not Python objects); no index of our own.
- **Auditing**: each group's lines, back in file order, are parsed and go through the same
  `patient.evaluate` as the local engine's (split by encounter, `answer_hook`, no store).
- **The runtime** (the tabular) is loaded once per worker process, never per task: in a local
  cluster, by the parent before the workers are forked from it (Dask's
  `distributed.worker.multiprocessing-method` "fork"), so they share it page for page; on a cluster
  at `--scheduler`, by `RuntimePlugin.setup` when a worker joins.
- **Lines not read** come back with their block and place in it, and are named `file:line` as the
  local engine names them (each block also gives its count of lines).
- **A worker that dies** (segfault, OOM killer) is restarted by its nanny and its task run again;
  a task that killed `distributed.scheduler.allowed-failures` + 1 workers ends in KilledWorker, and
  the patients of that partition are reported as "worker died" (their ids are a small task of
  their own, computed from the same shuffle output); the other partitions go on.

Rows are collected by the client and written as the local engine writes them (output.py).
"""
from __future__ import annotations

import gc
import logging
from pathlib import Path

import orjson

from . import patient as one
from .export import bundle_resources, export_files_at, owner_of, owner_of_line
from .local import WORKER_DIED, Progress

BLOCKSIZE = 64 * 2**20  # bytes of NDJSON a reading task
LINE_END = b"\n"

try:
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - dask[distributed] is a dependency
    WorkerPlugin = object


class RuntimePlugin(WorkerPlugin):
    """Loads the runtime once when a worker joins; a worker forked from a parent that had it keeps that one."""

    name = "spine-cds-audit-runtime"

    def __init__(self, settings):
        self.settings = settings

    def setup(self, worker=None):
        one.load_runtime(self.settings, reuse=True)


# ------------------------------------------------------------------ tasks (run on the workers)
def _start_of(f, offset: int) -> int:
    """Where the first line that starts at or after `offset` begins (fsspec's read_block rule)."""
    if offset == 0:
        return 0
    f.seek(offset)
    while True:
        chunk = f.read(2**16)
        if not chunk:
            return f.tell()
        found = chunk.find(LINE_END)
        if found >= 0:
            return f.tell() - len(chunk) + found + 1


def read_block(fs, file: str, rank: int, name: str, offset: int, length: int) -> list[tuple]:
    """The lines of `file` that start in [offset, offset + length) (rounded to line ends), as
    ("r", patient, (rank, byte offset), line) for each resource, ("x", name, rank, block, line in block,
    error) for each line not read, and one ("n", name, rank, block, lines, resources)."""
    with fs.open(file, "rb") as f:
        start = _start_of(f, offset)
        end = _start_of(f, offset + length)
        f.seek(start)
        data = f.read(max(end - start, 0))
    lines = data.split(LINE_END) if data else []  # a block inside a long line holds no line
    if data.endswith(LINE_END):
        lines.pop()  # what follows the last line end is not a line
    out: list[tuple] = []
    position, resources = start, 0
    for number, line in enumerate(lines):
        if line.strip():
            resources += 1
            owner, error = owner_of_line(line)
            if error:
                out.append(("x", name, rank, start, number, error))
            else:
                out.append(("r", owner, (rank, position), line))
        position += len(line) + 1
    out.append(("n", name, rank, start, len(lines), resources))
    return out


def read_bundle(fs, file: str, rank: int, name: str) -> list[tuple]:
    """A .json file's resources, as read_block gives them (its entry number for position; errors on line 1)."""
    resources, error = bundle_resources(fs.cat_file(file))
    if error:
        return [("x", name, rank, -1, 0, error), ("n", name, rank, -1, 0, 1)]
    out: list[tuple] = []
    count = 0
    for n, resource in enumerate(resources):
        if isinstance(resource, dict):
            count += 1
            owner, error = owner_of(resource)
            out.append(("x", name, rank, -1, 0, error) if error else
                       ("r", owner, (rank, n), orjson.dumps(resource)))
    out.append(("n", name, rank, -1, 0, count))
    return out


def _is_resource(item: tuple) -> bool:
    return item[0] == "r"


def _is_note(item: tuple) -> bool:
    return item[0] != "r"


def _owner(item: tuple) -> str:
    return item[1]


def _position(item: tuple):
    return item[2]


def audit_groups(groups) -> list[tuple[str, list[dict] | dict]]:
    """One partition of the shuffle: (patient, rows or `unread`) for each of its patients."""
    out = []
    for patient, items in groups:
        items = sorted(items, key=_position)  # file order, as the local engine reads them
        out.append((patient, one.evaluate(patient, lambda items=items: [orjson.loads(i[3]) for i in items])))
    return out


def patients_of(groups) -> list[str]:
    return [patient for patient, _ in groups]


def _concat(parts) -> list:
    return [item for part in parts for item in part]


# ------------------------------------------------------------------ the client
def _line_numbers(notes: list[tuple]) -> tuple[list[dict], int]:
    """The lines not read as `file:line`, and the number of resources, from the blocks' notes."""
    blocks: dict[str, list[tuple[int, int]]] = {}
    resources = 0
    for kind, name, _rank, start, lines, *rest in notes:
        if kind == "n":
            blocks.setdefault(name, []).append((start, lines))
            resources += rest[0]
    before: dict[tuple[str, int], int] = {}
    for name, found in blocks.items():
        total = 0
        for start, lines in sorted(found):
            before[(name, start)] = total
            total += lines
    unread = [one.unread(f"{name}:{1 if start < 0 else before.get((name, start), 0) + number + 1}", "reading", error)
              for kind, name, _rank, start, number, error in notes if kind == "x"]
    return unread, resources


def _cluster(workers: int, scheduler: str | None):
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.CRITICAL, scheduler_port=0, host="127.0.0.1")
    return Client(cluster), cluster


def run_dask(path: str | Path, workers: int, progress, started: float, scheduler: str | None = None,
             blocksize: int = BLOCKSIZE, npartitions: int | None = None, allowed_failures: int | None = None,
             settings=None) -> dict:
    import dask
    import dask.bag as db
    import fsspec
    from distributed import KilledWorker, as_completed

    fs, root = fsspec.core.url_to_fs(str(path))
    files = export_files_at(fs, root)
    settings = settings or one.audit_settings()
    if not scheduler:
        one.load_runtime(settings)  # before the fork: the local cluster's workers share it
        gc.collect()
        gc.freeze()
    config = {"distributed.worker.multiprocessing-method": "fork"}  # the workers share the parent's runtime
    if allowed_failures is not None:
        config["distributed.scheduler.allowed-failures"] = allowed_failures
    client = cluster = None
    try:
        with dask.config.set(config):  # also for the nanny's restarts of a worker that died
            client, cluster = _cluster(workers, scheduler)
            client.register_plugin(RuntimePlugin(settings))
            workers = len(client.scheduler_info(n_workers=-1)["workers"]) if scheduler else workers
            read = dask.delayed(read_block, pure=True)
            parts = []
            for rank, (name, file, kind) in enumerate(files):
                if kind == "ndjson":
                    size = fs.size(file)
                    parts += [read(fs, file, rank, name, offset, blocksize) for offset in range(0, size, blocksize)]
                else:
                    parts.append(dask.delayed(read_bundle, pure=True)(fs, file, rank, name))
            if not parts:
                parts = [dask.delayed(list, pure=True)()]
            parsed = db.from_delayed(parts)
            resources = parsed.filter(_is_resource)
            wanted = npartitions or max(len(parts), 4 * workers)  # a tasks shuffle keeps its input's partitions
            if wanted != len(parts):
                resources = resources.repartition(npartitions=wanted)
            # The shuffle's output held on the workers (recomputed from its blocks if a worker dies), so
            # that the patients' ids and the audit read it once. The ids are gathered before any audit task
            # runs: a worker that dies auditing a partition cannot take the ids of that partition with it.
            grouped = client.persist(resources.groupby(_owner, shuffle="tasks"), optimize_graph=False)
            keys_f = client.compute(grouped.map_partitions(patients_of).to_delayed(optimize_graph=False),
                                    optimize_graph=False)
            known = []  # each partition's patients, held here once known
            for n, future in enumerate(keys_f):
                try:
                    known.append(future.result())
                except Exception:  # noqa: BLE001 - the partition could not even be grouped: it is named
                    known.append([f"(partition {n})"])
                future.release()
            audited = grouped.map_partitions(audit_groups).to_delayed(optimize_graph=False)
            notes = dask.delayed(_concat, pure=True)(parsed.filter(_is_note).to_delayed(optimize_graph=False))
            futures = client.compute(audited + [notes], optimize_graph=False)
            audit_f, notes_f = futures[:-1], futures[-1]
            partition_of = {f.key: n for n, f in enumerate(audit_f)}
            if progress:
                print(f"audit: {len(parts)} blocks read and grouped by patient into {len(audit_f)} partitions "
                      f"on {workers} workers", file=progress, flush=True)
            shown = Progress(progress, len(audit_f), started, unit="partitions")
            shown.total_patients = sum(len(k) for k in known)
            rows: list[dict] = []
            unread: list[dict] = []
            patients = 0
            for future in as_completed(audit_f):
                n = partition_of[future.key]
                try:
                    results = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker after the retries, or the task failed
                    lost = known[n]
                    error = WORKER_DIED if isinstance(exc, KilledWorker) else type(exc).__name__
                    unread += [one.unread(p, "evaluating", error) for p in lost]
                    results = [(p, None) for p in lost]
                cards = 0
                for _patient, outcome in results:
                    if isinstance(outcome, dict):
                        unread.append(outcome)
                    elif outcome:
                        rows.extend(outcome)
                        cards += sum(1 for r in outcome if r["rule"] != "(not evaluated)")
                patients += len(results)
                shown.add(1, len(results), cards)
                future.release()
            shown.end()
            unread_lines, resources = _line_numbers(notes_f.result())
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if not scheduler:
            gc.unfreeze()
    return {"rows": rows, "unread_lines": unread_lines, "unread_patients": unread, "patients": patients,
            "resources": resources, "workers": workers}
