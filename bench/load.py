"""The load generator: N client processes, each posting request bodies in turn over HTTP/1.1.

Each client is its own process (no shared interpreter lock with the others), pre-encodes its
bodies, and records the latency of every request. The generator's own CPU time is measured
(getrusage of the children) and reported beside the server's, so the figures say how much of
the machine the load itself took.

The clients warm up (a few requests each, not measured), say they are ready, and start together;
`probe` (the server's CPU seconds, from bench/run.py) is read after every client has warmed up
and again after the last measured answer, so the server CPU of a run covers exactly its
measured requests, not the warm-up ones.
"""
from __future__ import annotations

import http.client
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path


def _client(port: int, path: str, bodies: list[bytes], count: int, warmup: int, ready, start, queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    latencies, statuses = [], {}

    def one(n: int) -> float:
        body = bodies[n % len(bodies)]  # warm-up takes the first bodies, the measured run the next
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        statuses[status] = statuses.get(status, 0) + 1
        return time.perf_counter() - t0

    for n in range(warmup):
        one(n)
    statuses.clear()
    ready.release()
    start.wait()
    began = time.perf_counter()
    for n in range(count):
        latencies.append(one(warmup + n))
    queue.put((latencies, statuses, began, time.perf_counter()))
    conn.close()


WARMUP = 3  # requests per client before the measured ones


def run(port: int, path: str, bodies: list[bytes], clients: int, requests_per_client: int,
        warmup: int = WARMUP, probe=None) -> dict:
    """Latencies (ms), throughput, status counts and the generator's own CPU seconds; with
    `probe`, its value at the start and the end of the measured requests."""
    ctx = mp.get_context("fork")
    queue, start, ready = ctx.Queue(), ctx.Event(), ctx.Semaphore(0)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Each client gets its own bodies (warm-up first): no two requests of a run share a record
    # unless the run is given a single body (the repeat workload).
    procs = [ctx.Process(target=_client, args=(port, path, bodies[i::clients] or bodies, requests_per_client,
                                               warmup, ready, start, queue)) for i in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=600):
            raise RuntimeError("a load client did not finish its warm-up")
    time.sleep(0.05)  # the server's work after the last warm-up answer (deferred writes, GC)
    probe_start = probe() if probe else None
    start.set()
    results = [queue.get(timeout=1800) for _ in procs]
    time.sleep(0.05)  # ... and after the last measured one
    probe_end = probe() if probe else None
    for p in procs:
        p.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies = sorted(ms * 1000 for r in results for ms in r[0])
    statuses: dict = {}
    for r in results:
        for status, n in r[1].items():
            statuses[status] = statuses.get(status, 0) + n
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    return {
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "p99_ms": percentile(latencies, 99),
        "generator_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "probe": None if probe is None else probe_end - probe_start,
        "latencies_ms": latencies,  # every sample, sorted (bench/run.py merges blocks, then drops them)
    }


def percentile(sorted_values: list[float], pct: float) -> float:
    """The nearest-rank percentile of sorted values (p99 of 1,000 samples: the 990th)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def cpu_model() -> str:
    """The machine's processor, as the benchmarks print it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
