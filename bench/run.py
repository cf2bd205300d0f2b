"""Benchmark Spine Coding CDS the way users run it, against the bare cost of the same stack.

    make bench            # or: .venv/bin/python bench/run.py [--quick] [--out FILE]

Starts `spine-cds serve` (gunicorn, 2 workers, production settings, SQLite in a temporary
folder) and a baseline gunicorn app on loopback, drives both with bench/load.py, and prints
every figure of issue 4 against its target; the JSON goes to bench/results/latest.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import load  # noqa: E402
from bench.workloads import count_resources, record, text_bytes  # noqa: E402

SERVICE_PATH = "/cds-services/spine-coding-order-sign"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.02)
    raise SystemExit("server not ready in time")


def tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        pids.extend(tree(int(child)))
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def pss_mb(pid: int) -> dict:
    out = {}
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out[p] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


class Server:
    def __init__(self, name: str, command: list[str], env: dict, log: Path):
        self.name = name
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in command]
        self.log = open(log, "w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.ready_s = wait_ready(self.port, self.process)

    def measure(self, bodies: list[bytes], clients: int, per_client: int) -> dict:
        before = cpu_seconds(self.process.pid)
        result = load.run(self.port, SERVICE_PATH, bodies, clients, per_client)
        result["server_cpu_s"] = cpu_seconds(self.process.pid) - before
        result["server_cpu_ms_per_request"] = 1000 * result["server_cpu_s"] / max(1, result["requests"])
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def encode(bodies: list[dict]) -> list[bytes]:
    return [json.dumps(b).encode() for b in bodies]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests (noisier figures)")
    parser.add_argument("--smoke", action="store_true", help="a handful of requests: checks the benchmark runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    scale = 0.01 if args.smoke else 0.25 if args.quick else 1.0

    def n(count: int) -> int:
        return max(5, int(count * scale))

    print("generating workloads ...", file=sys.stderr)
    seeds = iter(range(1, 10**6))

    def fresh(resources: int, kb: float, count: int) -> list[bytes]:
        """A new record for every request (a record seen before is the repeat workload)."""
        return encode([record(resources, kb, seed=next(seeds)) for _ in range(count)])

    repeat = fresh(40, 12, 1)
    sample = record(40, 12, seed=0)
    workload_facts = {
        "typical": {"resources": count_resources(sample), "text_kb": round(text_bytes(sample) / 1024, 1)},
        "large": {"resources": count_resources(record(300, 60, seed=0)),
                  "text_kb": round(text_bytes(record(300, 60, seed=0)) / 1024, 1)},
    }

    python = str(Path(sys.executable))
    tmp = Path(tempfile.mkdtemp(prefix="spine-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_CDS_")}
    env.update(SPINE_CDS_DATA_DIR=str(tmp), SPINE_CDS_LOG_LEVEL="INFO")
    results: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform(), "cpu": _cpu_model()},
                     "workloads": workload_facts}

    print("starting spine-cds serve ...", file=sys.stderr)
    ours = Server("spine-cds", [python, "-m", "service.cli", "serve", "--port", "{port}", "--workers", "2"],
                  env, tmp / "service.log")
    base = Server("baseline", [str(Path(python).with_name("gunicorn")), "-w", "2", "--preload", "-b",
                               "127.0.0.1:{port}", "--access-logfile", "-", "bench.baseline_app:app"],
                  env, tmp / "baseline.log")
    try:
        results["ready_s"] = ours.ready_s
        runs = {}
        plan = (
            ("baseline-1", base, 40, 12, 1, n(300)),
            ("baseline-8", base, 40, 12, 8, n(100)),
            ("typical-1", ours, 40, 12, 1, n(300)),
            ("typical-8", ours, 40, 12, 8, n(100)),
            ("repeat-1", ours, None, None, 1, n(300)),
            ("repeat-8", ours, None, None, 8, n(200)),
            ("large-1", ours, 300, 60, 1, n(60)),
            ("large-8", ours, 300, 60, 8, n(12)),
            ("size-40", ours, 40, 12, 1, n(60)),
            ("size-100", ours, 100, 30, 1, n(60)),
            ("size-300", ours, 300, 60, 1, n(60)),
        )
        for name, server, resources, kb, clients, per_client in plan:
            print(f"  {name} ...", file=sys.stderr)
            bodies = repeat if resources is None else fresh(resources, kb, clients * (per_client + 3))
            runs[name] = server.measure(bodies, clients, per_client)
        results["runs"] = runs
        pss = pss_mb(ours.process.pid)
        results["pss_mb"] = {"total": round(sum(pss.values()), 1), "processes": len(pss),
                             "by_pid": {str(k): round(v, 1) for k, v in pss.items()}}
        timeouts = sum(1 for line in (tmp / "service.log").read_text().splitlines() if "deadline" in line)
        results["deadline_timeouts_logged"] = timeouts
    finally:
        ours.stop()
        base.stop()

    results["checks"] = checks(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"\nJSON: {args.out}", file=sys.stderr)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def checks(r: dict) -> list[dict]:
    runs = r["runs"]
    base_cpu = runs["baseline-1"]["server_cpu_ms_per_request"]
    ours_cpu = runs["typical-1"]["server_cpu_ms_per_request"]
    size_ratio = runs["size-300"]["p50_ms"] / runs["size-40"]["p50_ms"]
    resources_ratio = 300 / 40
    rows = [
        ("typical, 1 client: p50", runs["typical-1"]["p50_ms"], "ms", "<=", 10),
        ("typical, 1 client: p95", runs["typical-1"]["p95_ms"], "ms", "<=", 20),
        ("typical, 8 clients: throughput", runs["typical-8"]["throughput_rps"], "req/s", ">=", 150),
        ("typical, 8 clients: p95", runs["typical-8"]["p95_ms"], "ms", "<=", 80),
        ("repeat, 8 clients: throughput", runs["repeat-8"]["throughput_rps"], "req/s", ">=", 500),
        ("CPU per request / baseline", ours_cpu / base_cpu if base_cpu else float("inf"), "x", "<=", 6),
        ("large, 1 client: p95", runs["large-1"]["p95_ms"], "ms", "<=", 100),
        ("time 300 vs 40 resources / record ratio", size_ratio / resources_ratio, "x", "<=", 1),
        ("ready after start", r["ready_s"], "s", "<=", 3),
        ("PSS of the server (master + 2 workers)", r["pss_mb"]["total"], "MB", "<=", 400),
    ]
    out = []
    for name, value, unit, op, target in rows:
        ok = value <= target if op == "<=" else value >= target
        out.append({"figure": name, "value": round(value, 2), "unit": unit, "target": f"{op} {target}",
                    "met": ok})
    return out


def report(r: dict) -> str:
    lines = [f"Spine Coding CDS benchmark — {r['machine']['cores']} cores, {r['machine']['cpu']}, "
             f"Python {r['machine']['python']}",
             f"typical: {r['workloads']['typical']['resources']} resources, {r['workloads']['typical']['text_kb']} KB "
             f"text; large: {r['workloads']['large']['resources']} resources, {r['workloads']['large']['text_kb']} KB",
             "",
             f"{'run':<12}{'reqs':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>9}{'srv CPU ms/req':>16}"
             f"{'gen CPU s':>11}  statuses"]
    for name, run in r["runs"].items():
        lines.append(f"{name:<12}{run['requests']:>6}{run['p50_ms']:>9.2f}{run['p95_ms']:>9.2f}{run['p99_ms']:>9.2f}"
                     f"{run['throughput_rps']:>9.1f}{run['server_cpu_ms_per_request']:>16.2f}"
                     f"{run['generator_cpu_s']:>11.2f}  {run['statuses']}")
    lines += ["", f"ready after {r['ready_s']:.2f} s; PSS {r['pss_mb']['total']} MB over {r['pss_mb']['processes']} "
              f"processes", "", f"{'figure':<44}{'value':>10} {'unit':<6}{'target':>10}  met"]
    for c in r["checks"]:
        lines.append(f"{c['figure']:<44}{c['value']:>10} {c['unit']:<6}{c['target']:>10}  {'yes' if c['met'] else 'NO'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
