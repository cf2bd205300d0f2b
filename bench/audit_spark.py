"""The same audit on PySpark, for the README's "why Dask": measured, not argued.

PySpark is not a dependency of the service: this measurement runs when pyspark is importable (e.g.
`python -m venv /tmp/spark && /tmp/spark/bin/pip install pyspark`, then this script with
PYTHONPATH=/tmp/spark/lib/python3.11/site-packages and the project's venv Python) and a JVM is on
the PATH (Java 17 here). It reads the NDJSON of a Bulk Data export with Spark (`textFile`), groups
the lines by patient in Spark (`groupByKey`), and runs the very per-patient function of the other
engines (`service.audit.patient.audit_patient`) in Spark's Python workers, each loading the
runtime once (Python workers are reused). It prints seconds, patients/s and the number of rows, which
must equal the other engines' for the same export.

    .venv/bin/python bench/audit_spark.py EXPORT_FOLDER [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _patient_lines(line: str):
    from service.audit.export import owner_of_line

    owner, _ = owner_of_line(line.encode())
    yield owner or "(no patient)", line  # as the other engines group them


def _audit_partition(groups):
    import orjson

    from service.audit.patient import audit_patient, load_runtime

    load_runtime(reuse=True)  # once per Python worker (spark.python.worker.reuse)
    for _patient, lines in groups:
        yield len(audit_patient([orjson.loads(line) for line in lines]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        print("audit_spark: pyspark is not installed (it is not a dependency): nothing measured", file=sys.stderr)
        return 2
    started = time.monotonic()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    spark = (SparkSession.builder.master(f"local[{args.workers}]").appName("spine-cds-audit")
             .config("spark.ui.enabled", "false").config("spark.python.worker.reuse", "true")
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    up = time.monotonic() - started
    files = ",".join(str(p) for p in sorted(args.export.glob("*.ndjson")))
    lines = spark.sparkContext.textFile(files, minPartitions=args.workers * 4)
    grouped = lines.flatMap(_patient_lines).groupByKey(numPartitions=args.workers * 4)
    counts = grouped.mapPartitions(_audit_partition).collect()
    seconds = time.monotonic() - started
    spark.stop()
    result = {"engine": "pyspark", "workers": args.workers, "patients": len(counts), "rows": sum(counts),
              "seconds": round(seconds, 1), "session_start_seconds": round(up, 1),
              "patients_per_second": round(len(counts) / seconds, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
