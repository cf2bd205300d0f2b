"""Hardening report: attacks tried and refused, fuzz cases and 5xx, FHIR faults and hangs,
feedback acknowledged and lost under load and crash, canaries in the logs.

    make harden     # or: .venv/bin/python hardening/report.py [--quick]

Runs the hardening tests with larger counts (fuzz examples, a 60 s load per database), then
prints their figures and writes hardening/results/latest.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TESTS = ["tests/test_attacks.py", "tests/test_jwt.py", "tests/test_fuzz.py", "tests/test_faults.py",
         "tests/test_fhir_fetch.py", "tests/test_load_crash.py", "tests/test_privacy.py",
         "tests/test_database_faults.py", "tests/test_slow_clients.py", "tests/test_url_allowlist.py",
         "tests/test_injection.py", "tests/test_hostile_records.py", "tests/test_memory.py", "tests/test_html_reader.py",
         "tests/test_auth_gates.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="suite-sized counts (fuzz 120 examples, 12 s load)")
    parser.add_argument("--out", type=Path, default=ROOT / "hardening" / "results" / "latest.json")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("SPINE_CDS_TEST_FUZZ_EXAMPLES", "120" if args.quick else "500")
    env.setdefault("SPINE_CDS_TEST_LOAD_SECONDS", "12" if args.quick else "60")
    env.setdefault("SPINE_CDS_TEST_SLOW_HEADERS", "64" if args.quick else "256")  # slow clients: 1 byte/s headers
    env.setdefault("SPINE_CDS_TEST_SLOW_READERS", "16" if args.quick else "64")  # and slow readers of large answers
    for old in ARTIFACTS.glob("*.json"):
        old.unlink()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *TESTS],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    report = {"tests": tail, "passed": result.returncode == 0, "seconds": round(time.monotonic() - started, 1),
              "fuzz_examples_per_operation": int(env["SPINE_CDS_TEST_FUZZ_EXAMPLES"]),
              "load_seconds": float(env["SPINE_CDS_TEST_LOAD_SECONDS"])}
    for name in ("attacks", "fuzz-counts", "faults", "load-crash-sqlite", "load-crash-postgresql", "slow-clients",
                 "database-faults", "hostile-records", "memory"):
        path = ARTIFACTS / f"{name}.json"
        report[name] = json.loads(path.read_text()) if path.exists() else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    (args.out.parent / "pytest-output.txt").write_text(result.stdout + result.stderr)
    print(render(report))
    if result.returncode != 0:
        failed = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        print("\n" + "\n".join(failed) + f"\n(the whole output: {args.out.parent / 'pytest-output.txt'})",
              file=sys.stderr)
    print(f"\nJSON: {args.out}", file=sys.stderr)
    return result.returncode


def render(r: dict) -> str:
    lines = [f"Spine Coding CDS hardening report — {r['tests']} ({r['seconds']} s)", ""]
    a = r["attacks"] or {}
    lines.append(f"token attacks (served, 2 workers)   tried {a.get('tried', '-')}, refused {a.get('refused', '-')}, "
                 f"accepted {a.get('accepted', '-')} (plus the JWT unit suite)")
    f = r["fuzz-counts"] or {}
    total = (f.get("schemathesis") or 0) + (f.get("hypothesis") or 0)
    lines.append(f"fuzzing (served)                    {total} requests: schemathesis {f.get('schemathesis', '-')}, "
                 f"hypothesis {f.get('hypothesis', '-')}; 5xx 0 and every error an OperationOutcome"
                 if r["passed"] else f"fuzzing: {total} requests; FAILED, see the output")
    x = r["faults"] or {}
    lines.append(f"failing FHIR servers (served)       faults {x.get('faults', '-')}, answered within the budget "
                 f"{x.get('answered_in_budget', '-')}, hangs {x.get('hangs', '-')}, "
                 f"worker restarts {x.get('worker_restarts', '-')}")
    lines.append("SSRF                                fhirServer and jku off the allowlist: the canary socket "
                 "received 0 connections" if r["passed"] else "SSRF: see the test output")
    for backend in ("sqlite", "postgresql"):
        d = r[f"load-crash-{backend}"]
        if d is None:
            lines.append(f"load and crash ({backend:<10})      not run (see the skip reason)")
            continue
        lines.append(f"load and crash ({backend:<10})      {d['clients']} clients {d['seconds']:.0f} s: "
                     f"{d['requests']} requests, 5xx outside the kill {d['server_errors_outside_kill']}, "
                     f"connection errors during kill/restart {d['connection_errors_during_kill_or_restart']} "
                     f"(outside {d['connection_errors_outside']}), feedback acknowledged "
                     f"{d['feedback_acknowledged']} / in the database {d['feedback_in_database']}, "
                     f"integrity {d['integrity']}")
    w = r.get("slow-clients")
    lines.append(f"slow clients (served, 2 workers)    {w['slow_header_connections']} connections sending headers at "
                 f"1 byte/s + {w['slow_readers']} slow readers ({w['slow_reader_answer_bytes'] // 1024} KB at 512 B/s): "
                 f"legitimate p95 {w['baseline']['p95_ms']} -> {w['under_attack']['p95_ms']} ms "
                 f"(delta {w['p95_delta_ms']} ms, round {w['rounds']}), worker restarts {w['worker_restarts']}"
                 if w else "slow clients                        not run (see the test output)")
    for case, d in (r.get("database-faults") or {}).items():
        if "hook_calls" in d:
            lines.append(f"database fault: {case:<22} {d['hook_calls']} hook calls, {d['answered_200']} answered 200, "
                         f"slowest {d['slowest_s']} s; feedback {d['feedback_200']} stored, {d['feedback_503']} refused "
                         f"503; worker deaths {d['worker_deaths']}")
        else:
            lines.append(f"database fault: {case:<22} " + ", ".join(f"{k} {v}" for k, v in d.items()))
    if r["passed"]:
        sys.path.insert(0, str(ROOT))
        from tests.test_injection import PAYLOADS  # noqa: PLC0415 - the counts the tests ran
        from tests.test_url_allowlist import NORMALISED, TRICK_NAMES  # noqa: PLC0415

        lines.append(f"URL tricks (served)                 {len(TRICK_NAMES)} tricks as an attachment url and as a next "
                     f"link, off-allowlist fhirServers: 0 requests outside the allowed base, 0 connections on "
                     f"the canary; {len(NORMALISED)} spellings of an allowed URL read at their canonical path")
        lines.append(f"chart text as markup                {len(PAYLOADS)} payloads (links, images, HTML, script, code, "
                     "headings, tables, blocks, e-mail) in every chart field: every card, page and CSV shows them "
                     "as text")
    for case, d in (r.get("hostile-records") or {}).items():
        lines.append(f"hostile record: {case:<30} {d['seconds']} s, {d['cards']} cards, "
                     f"{d['answer_bytes'] // 1024} KB, worker deaths {d['worker_deaths']}")
    m = r.get("memory")
    if m:
        lines.append(f"worker memory (served)              {m['notes']} distinct 5 MB notes: RSS {m['before_mb']} -> "
                     f"{m['after_mb']} MB (bound: +100 MB)")
    lines.append("clinical text, JWTs, tokens in logs 0 canaries found (81 vignettes x 4 levels, and a served "
                 "instance at DEBUG)" if r["passed"] else "log privacy: see the test output")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
