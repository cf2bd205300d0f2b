"""`spine-cds audit PATH`: the rules over past records — FHIR Bundles or a Bulk Data export.

How many past encounters would a rule have caught? PATH is a Bundle, an NDJSON file, or a folder
of them, e.g. a Bulk Data `$export` output (one NDJSON file per resource type, and the export's
`manifest.json`, which is skipped; fhir_fixtures/export/ is one). Each patient's resources are
gathered, split by encounter, and run through the same pipeline as a hook call (`encounter-sign`,
`answer_hook` with no store: nothing is recorded). Output: `audit.csv`, every card sorted by
patient, encounter and rule (a folder of part files past a million rows), and `audit.html`
(counts per rule and kind, examples with their evidence, what could not be read). The audit
output quotes clinical evidence: keep it where the records are kept.

Two engines give the same rows and the same summary (tests/test_audit.py checks it):

- `local` (local.py, the default): one machine. A first pass notes where each patient's
  resources lie; the parent loads the runtime once and forks a pool that shares it; each worker
  reads its patients back by offset.
- `dask` (distributed.py): Dask distributed, a local cluster of forked processes or a cluster at
  `--scheduler tcp://host:8786`; the workers read the export (a folder or an fsspec URL), the
  engine's shuffle groups it by patient, and the same per-patient function audits each group.

The parts: patient.py (`audit_patient`, one patient's rows: pure but for the process's runtime),
export.py (which files, one line or Bundle read, the local engine's index), output.py (the CSV
and the page). A line that is not JSON or not an object, a patient whose evaluation raises, and a
patient (or, with Dask, a partition) whose worker process died are reported by error type only —
never the text — and skipped; the audit goes on.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .export import index, is_bulk_manifest, read_resources, scan
from .local import default_workers, run_local
from .output import COLUMNS, PART_ROWS, write
from .patient import RULES_URL, audit_patient, init_worker, load_runtime, patient_of

ENGINES = ("local", "dask")

__all__ = ["COLUMNS", "ENGINES", "PART_ROWS", "RULES_URL", "audit_patient", "index", "init_worker",
           "is_bulk_manifest", "load_runtime", "patient_of", "read_resources", "run", "scan"]


def run(path: Path | str, out: Path, workers: int | None = None, progress=sys.stderr, engine: str = "local",
        scheduler: str | None = None, partitioned: bool = False, part_rows: int = PART_ROWS, **engine_options) -> dict:
    """Audits PATH into `out` (audit.csv or audit/part-*.csv, audit.html) and returns the summary.
    `engine`: "local" (a local path) or "dask" (a local path or an fsspec URL; `scheduler`: a cluster's
    address, else a local cluster of `workers` processes). `engine_options`: the Dask engine's
    blocksize, npartitions, allowed_failures."""
    started = time.monotonic()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
    workers = workers or default_workers()
    if engine == "dask":
        from .distributed import run_dask

        done = run_dask(path, workers, progress, started, scheduler=scheduler, **engine_options)
    else:
        if scheduler:
            raise ValueError("--scheduler is for --engine dask")
        done = run_local(Path(path), workers, progress, started)
    return write(Path(out), done["rows"], done["unread_lines"], done["unread_patients"], patients=done["patients"],
                 resources=done["resources"], engine=engine, workers=done["workers"],
                 seconds=time.monotonic() - started, partitioned=partitioned, part_rows=part_rows)
