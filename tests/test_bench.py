"""The benchmarks run and report every figure (their figures are judged by `make bench` and
`make worst-case`, not here: this only checks that the commands work)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .support import ROOT


@pytest.mark.served
def test_the_benchmark_runs_and_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {"baseline-1", "baseline-8", "typical-1", "typical-8", "repeat-1", "repeat-8",
                                   "large-1", "large-8", "size-40", "size-100", "size-300"}
    for name, run in report["runs"].items():
        assert run["statuses"] == {"200": run["requests"]}, name
        assert run["p50_ms"] > 0 and run["p99_ms"] > 0 and run["server_cpu_ms_per_request"] > 0
        if not name.startswith("repeat"):
            # a new record for every request, every resource of it new: no cache can hide a cost
            assert run["resources_repeated"] == 0 and run["resources_sent"] > 0, name
    assert len(report["checks"]) == 12 and report["pss_mb"]["processes"] == 3
    for figure in ("typical, 1 client: server CPU per request", "typical, 1 client: p95", "typical, 1 client: p99"):
        assert figure in result.stdout


def test_typical_records_share_no_resource():
    sys.path.insert(0, str(ROOT))
    from bench.workloads import record, resources_of, shared_resources

    records = [record(40, 12, seed=seed) for seed in range(1, 11)]
    assert shared_resources(records) == 0
    assert shared_resources([records[0], records[0]]) == 2 * len(resources_of(records[0]))  # "repeat"


def test_the_worst_case_benchmark_measures_every_shape(tmp_path):
    out = tmp_path / "worst_case.json"
    result = subprocess.run([sys.executable, "bench/worst_case.py", "--quick", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    sys.path.insert(0, str(ROOT))
    from bench.worst_case import SHAPES

    assert set(report["shapes"]) == set(SHAPES)
    for name, shape in report["shapes"].items():
        assert shape["sizes"], name
        first = shape["sizes"][0]
        # a figure: a time, or how long it took at least before the timeout or the deadline
        assert first["status"] == "ok" and first["ms"] > 0 or first.get("lower_bound_ms"), (name, first)
        assert "exponent" in shape and "flags" in shape, name
        assert shape["hook"] and all(h["status"] == "ok" or h.get("lower_bound_ms") for h in shape["hook"]), name
        assert name in result.stdout
