"""The benchmark runs and reports every figure of issue 4 (its figures are judged by `make bench`,
not here: this only checks that the command works)."""
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
        assert run["p50_ms"] > 0 and run["server_cpu_ms_per_request"] > 0
    assert len(report["checks"]) == 10 and report["pss_mb"]["processes"] == 3
    assert "typical, 1 client: p50" in result.stdout
