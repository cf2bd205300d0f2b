"""The request and feedback checks, before and after the wire model (issue 12), per call.

    .venv/bin/python bench/wire.py [--quick] [--out FILE]

"before" is the hand-written check as it stood (bench/wire_legacy.py), "after" the check derived
from the pydantic models (service/wire.py, via service.hook_request and service.api.feedback);
both build the same HookRequest / item list. Each case runs in rounds that alternate the two (the
machine is shared: what one round loses to a neighbour the next does not), and the figure is the
best round's microseconds per call, with the median round beside it.

Cases: the typical order-sign record of bench/run.py (40 resources, the envelope around them:
6 prefetch keys, one draft order), the large one (300 resources), a typical record with one field
wrong (the error path: an OperationOutcome is built), a hostile one (20,000 malformed draft orders:
the former check answered 20,000 issues, this one 51), and feedback of 1 and of 100 items.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import wire_legacy as legacy  # noqa: E402
from bench.workloads import record  # noqa: E402
from service.api.feedback import parse_feedback  # noqa: E402
from service.errors import Problem  # noqa: E402
from service.hook_request import parse_hook_request  # noqa: E402
from service.services import SERVICES  # noqa: E402

SERVICE = SERVICES["spine-coding-order-sign"]


def _feedback(items: int) -> dict:
    return {"feedback": [{"card": f"9368d37b-283f-44a0-93ea-{n:012d}", "outcome": "overridden",
                          "overrideReason": {"reason": {"code": "provider-will-be-queried",
                                                        "system": "urn:spine-coding-cds:override-reason"},
                                             "userComment": "queried the surgeon"},
                          "outcomeTimestamp": "2026-11-21T10:00:00Z"} for n in range(items)]}


def cases() -> list[tuple[str, object, object, object]]:
    """(name, body, before, after): before/after take a body."""
    typical, large = record(40, 12, seed=0), record(300, 60, seed=0)
    wrong = copy.deepcopy(typical)
    wrong["context"]["patientId"] = "../1"
    hostile = copy.deepcopy(typical)
    hostile["context"]["draftOrders"]["entry"] = [{}] * 20_000
    hook = (lambda b: legacy.parse_hook_request(b, SERVICE), lambda b: parse_hook_request(b, SERVICE))
    # parse_feedback stamps each item with its parsed time: a fresh copy each call would measure the copy
    return [
        ("typical hook request (40 resources)", typical, *hook),
        ("large hook request (300 resources)", large, *hook),
        ("typical, one field wrong (400)", wrong, *hook),
        ("hostile: 20,000 bad draft orders (400)", hostile, *hook),
        ("hostile, and its answer serialized", hostile, *(_answered(check) for check in hook)),
        ("feedback, 1 item", _feedback(1), legacy.parse_feedback, parse_feedback),
        ("feedback, 100 items", _feedback(100), legacy.parse_feedback, parse_feedback),
    ]


def _answered(check):
    """The check and the JSON of its OperationOutcome, as the app sends it (what a hostile body costs)."""
    def run(body):
        try:
            return check(body)
        except Problem as problem:
            json.dumps(problem.to_json())
            raise
    return run


def _call(check, body):
    try:
        check(body)
    except Problem as problem:
        return len(problem.issues)
    return 0


def _round(check, body, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        _call(check, body)
    return (time.perf_counter() - started) / calls * 1e6


def measure(quick: bool = False) -> list[dict]:
    rows = []
    for name, body, before, after in cases():
        once = _round(after, body, 1)  # warm both, and size the rounds to about 20 ms each
        _round(before, body, 1)
        calls = max(1, int(20_000 / max(once, 1.0)))
        rounds = 5 if quick else 15
        timings = {"before": [], "after": []}
        for _ in range(rounds):
            for label, check in (("before", before), ("after", after)):
                timings[label].append(_round(check, body, calls))
        row = {"case": name, "calls_per_round": calls, "rounds": rounds,
               "issues_before": _call(before, body), "issues_after": _call(after, body)}
        for label, values in timings.items():
            row[f"{label}_us"] = round(min(values), 2)
            row[f"{label}_median_us"] = round(statistics.median(values), 2)
        row["after_over_before"] = round(row["after_us"] / row["before_us"], 2)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds a case instead of 15")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    rows = measure(args.quick)
    print(f"{'case':42} {'before µs':>10} {'after µs':>10} {'after/before':>13}  (median rounds)  issues")
    for r in rows:
        print(f"{r['case']:42} {r['before_us']:>10.2f} {r['after_us']:>10.2f} {r['after_over_before']:>13.2f}"
              f"  ({r['before_median_us']:.2f} / {r['after_median_us']:.2f})  {r['issues_before']} / {r['issues_after']}")
    if args.out:
        args.out.write_text(json.dumps({"python": sys.version.split()[0], "cases": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
