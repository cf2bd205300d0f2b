"""The audit's figures: patients per second of each engine against a floor that only reads the export.

    .venv/bin/python bench/audit_bench.py [--patients 20000] [--export DIR] [--before REV] [--out FILE]

On a Bulk Data export of `--patients` patients from bench/gen_export.py (generated into a temporary
folder unless `--export` names one), it times:

- **floor**: read and parse the NDJSON, nothing else: orjson per line, resources grouped by patient
  in a dict, one process;
- **local** (2 workers, or one per core), **dask 1 worker** and **dask 2 workers**: `spine-cds audit
  EXPORT --engine E --workers N` run as users run it, end to end (start, loading the tabular, the
  local cluster's start, reading, auditing, writing), with the peak memory of each worker process
  (RSS, and USS: the pages that are the worker's own, not shared with the parent it was forked from);
- `--before REV`: the audit of that git revision (e.g. the one before issue 13), the same way.

It prints a table (patients/s, seconds, ratio to the floor, peak memory per worker), checks that the
engines wrote the same audit.csv, prints what a run over 10 million patients would cost at the
measured per-worker rate (an estimate), and writes everything to `--out` (bench/results/audit.json).
Run it on a quiet machine: it takes a few minutes and uses every core.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen_export import generate  # noqa: E402
from service.audit.patient import patient_of  # noqa: E402

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def floor(export: Path) -> dict:
    """Read and parse every line, group by patient: the least any audit of this export must spend."""
    started = time.monotonic()
    patients: dict = defaultdict(list)
    lines = 0
    for file in sorted(export.glob("*.ndjson")):
        with open(file, "rb") as fh:
            for line in fh:
                resource = orjson.loads(line)
                patients[patient_of(resource)].append(resource)
                lines += 1
    seconds = time.monotonic() - started
    return {"seconds": round(seconds, 2), "patients": len(patients), "resources": lines}


def _tree_memory(process: psutil.Process, peaks: dict) -> None:
    """Peak RSS and USS (MB) of each process of the tree, by pid."""
    try:
        members = [process] + process.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            info = member.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        peak = peaks.setdefault(member.pid, {"rss": 0.0, "uss": 0.0, "parent": member.pid == process.pid})
        peak["rss"] = max(peak["rss"], info.rss / 2**20)
        peak["uss"] = max(peak["uss"], info.uss / 2**20)


def audit(export: Path, out: Path, engine: str, workers: int, cwd: Path = ROOT, env: dict | None = None) -> dict:
    """`spine-cds audit` as a user runs it, timed end to end, its process tree's memory sampled."""
    command = [sys.executable, "-m", "service.cli", "audit", str(export), "--out", str(out), "--workers", str(workers)]
    if engine != "before":
        command += ["--engine", engine]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watched = psutil.Process(process.pid)
    peaks: dict = {}
    while process.poll() is None:
        _tree_memory(watched, peaks)
        time.sleep(0.25)
    seconds = time.monotonic() - started
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode})")
    summary = json.loads(output)
    parent = next((p for p in peaks.values() if p["parent"]), {"rss": 0.0, "uss": 0.0})
    children = [p for p in peaks.values() if not p["parent"] and p["rss"] > 100]  # the workers, not helpers
    return {"engine": engine, "workers": workers, "seconds": round(seconds, 2), "patients": summary["patients"],
            "cards": summary["cards"], "parent_rss_mb": round(parent["rss"]),
            "worker_rss_mb": round(max((p["rss"] for p in children), default=0)),
            "worker_uss_mb": round(max((p["uss"] for p in children), default=0)),
            "csv": (out / "audit.csv").read_bytes() if (out / "audit.csv").exists() else None}


def _checkout(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--export", type=Path, help="an export to use (default: generated into a temporary folder)")
    parser.add_argument("--before", help="also time the audit of this git revision (e.g. the one before issue 13)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "audit.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        tmp = Path(tmp)
        export = args.export
        if export is None:
            export = tmp / "export"
            generate(export, args.patients, args.seed)
        size = sum(p.stat().st_size for p in export.glob("*.ndjson"))
        print(f"export: {export} ({size / 2**20:.0f} MB of NDJSON), {CORES} cores", file=sys.stderr)
        base = min((floor(export) for _ in range(2)), key=lambda r: r["seconds"])
        patients = base["patients"]
        print(f"floor: {base['seconds']} s", file=sys.stderr)
        runs = []
        plan = [("local", CORES), ("dask", 1), ("dask", CORES)]
        for engine, workers in plan:
            runs.append(audit(export, tmp / f"out-{engine}-{workers}", engine, workers))
            print(f"{engine} {workers}: {runs[-1]['seconds']} s", file=sys.stderr)
        if args.before:
            old = _checkout(args.before, tmp / "before")
            env = dict(os.environ, PYTHONPATH=str(old))
            runs.append(audit(export, tmp / "out-before", "before", CORES, cwd=old, env=env))
            runs[-1]["engine"] = f"before ({args.before})"
            print(f"before: {runs[-1]['seconds']} s", file=sys.stderr)
    same = len({r["csv"] for r in runs if not r["engine"].startswith("before")}) == 1
    for run in runs:
        run.pop("csv")
    rows = [{"what": "floor: read + parse + group (1 process)", "workers": 1, "seconds": base["seconds"],
             "patients_per_s": round(patients / base["seconds"]), "ratio": 1.0, "worker_rss_mb": "", "worker_uss_mb": ""}]
    for run in runs:
        rows.append({"what": f"{run['engine']} engine, end to end", "workers": run["workers"], "seconds": run["seconds"],
                     "patients_per_s": round(patients / run["seconds"]), "ratio": round(run["seconds"] / base["seconds"], 1),
                     "worker_rss_mb": run["worker_rss_mb"], "worker_uss_mb": run["worker_uss_mb"]})
    print(f"\n{patients} patients, {base['resources']} resources, {size / 2**20:.0f} MB of NDJSON, {CORES} cores; "
          f"identical audit.csv from every engine: {same}\n")
    print("| run | workers | seconds | patients/s | × floor | peak RSS per worker (MB) | of which its own (USS, MB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['workers']} | {row['seconds']} | {row['patients_per_s']} | {row['ratio']} | "
              f"{row['worker_rss_mb']} | {row['worker_uss_mb']} |")
    one = next(r for r in runs if r["engine"] == "dask" and r["workers"] == 1)
    per_worker = patients / one["seconds"]  # start-up included: a long run pays it once
    target = 10_000_000
    core_hours = target / per_worker / 3600
    shuffle_gb = size / patients * target / 2**30
    estimate = {"patients": target, "patients_per_worker_s": round(per_worker, 1), "core_hours": round(core_hours, 1),
                "hours_on_64_workers": round(core_hours / 64, 2), "hours_on_256_workers": round(core_hours / 256, 2),
                "worker_memory_mb": one["worker_rss_mb"], "shuffle_gb": round(shuffle_gb)}
    print(f"\nEstimate for {target:,} patients at {per_worker:.0f} patients/s per worker: {core_hours:.0f} core-hours "
          f"({core_hours / 64:.1f} h on 64 workers, {core_hours / 256:.1f} h on 256); about {shuffle_gb:.0f} GB of "
          f"NDJSON through the shuffle; {one['worker_rss_mb']} MB per worker.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"patients": patients, "resources": base["resources"], "ndjson_mb": round(size / 2**20),
                                    "cores": CORES, "floor": base, "runs": runs, "identical_csv": same,
                                    "estimate": estimate}, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
