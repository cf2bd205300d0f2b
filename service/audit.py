"""`spine-cds audit PATH`: the rules over past records — FHIR Bundles or a Bulk Data export.

How many past encounters would a rule have caught? PATH is a Bundle, an NDJSON file, or a folder
of them, e.g. a Bulk Data `$export` output (one NDJSON file per resource type, and the export's
`manifest.json`, which is skipped; fhir_fixtures/export/ is one). The export is read in a first pass that only
notes, per patient, where each of their resources lies (file and byte offset); then each patient's
record is read back alone, split by encounter, and run through the same pipeline as a hook call
(`encounter-sign`). Memory holds one patient's record per worker; patients are spread over the
cores. Output: a CSV of every card and an HTML summary (counts per rule and kind, examples with
their evidence). The audit output quotes clinical evidence: keep it where the records are kept.

The per-patient step, `audit_patient(resources)`, is a pure function of one patient's resources,
so a distributed engine can run it where one machine is not enough, e.g. with Spark:
`rdd.map(parse).keyBy(patient_of).groupByKey().flatMap(lambda kv: audit_patient(list(kv[1])))`, or a
Dask bag `.groupby(patient_of).starmap(...)`; each executor calls `init_worker()` once.
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from .escaping import csv_row, html_text

UNREADABLE_LINES: list[str] = []  # "file:line" of the lines index() could not parse (the last index)
COLUMNS = ["patient", "encounter", "rule", "kind", "indicator", "summary", "current_codes", "proposed_codes",
           "missing_documentation", "evidence"]
_RUNTIME = None
RULES_URL = "http://localhost:8080/"  # where the cards' links point in the CSV (SPINE_CDS_PUBLIC_BASE_URL if set)


# ------------------------------------------------------------------ reading the export
def index(path: Path) -> tuple[dict[str, list[tuple[str, int]]], int]:
    """Patient → [(file, offset)] of their resources, and the number of resources. Offsets only:
    the content is read again per patient."""
    files = sorted(path.glob("**/*")) if path.is_dir() else [path]
    patients: dict[str, list[tuple[str, int]]] = defaultdict(list)
    count = 0
    UNREADABLE_LINES.clear()
    for file in files:
        if file.suffix == ".ndjson":
            with open(file, "rb") as fh:
                offset = 0
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            resource = json.loads(line)
                            owner = patient_of(resource) if isinstance(resource, dict) else None
                        except (ValueError, TypeError, AttributeError, RecursionError):
                            owner = None
                            UNREADABLE_LINES.append(f"{file.name}:{number}")
                        else:
                            patients[owner or "(no patient)"].append((str(file), offset))
                        count += 1
                    offset += len(line)
        elif file.suffix == ".json":
            try:
                bundle = json.loads(file.read_text())
            except (ValueError, RecursionError):
                UNREADABLE_LINES.append(f"{file.name}:1")
                continue
            if not isinstance(bundle, dict):
                UNREADABLE_LINES.append(f"{file.name}:1")
                continue
            if is_bulk_manifest(bundle):
                continue  # the export's manifest (its `output` lists the NDJSON files read here), not data
            entries = bundle.get("entry", []) if bundle.get("resourceType") == "Bundle" else [{"resource": bundle}]
            for n, entry in enumerate(entries):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    patients[patient_of(resource) or "(no patient)"].append((str(file), -1 - n))
                    count += 1
    return dict(patients), count


def is_bulk_manifest(document: dict) -> bool:
    """The manifest a Bulk Data status request answers with (saved beside the NDJSON files as
    `manifest.json`, e.g.): `transactionTime` and `output`, no resourceType."""
    return "resourceType" not in document and "transactionTime" in document and isinstance(document.get("output"), list)


def patient_of(resource: dict) -> str | None:
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for key in ("subject", "patient"):
        reference = (resource.get(key) or {}).get("reference", "") if isinstance(resource.get(key), dict) else ""
        if "Patient/" in reference:
            return reference.rsplit("Patient/", 1)[1]
    return None


def read_resources(places: list[tuple[str, int]]) -> list[dict]:
    out, bundles = [], {}
    for file, offset in places:
        if offset >= 0:
            with open(file, "rb") as fh:
                fh.seek(offset)
                out.append(json.loads(fh.readline()))
        else:
            if file not in bundles:
                bundles = {file: json.loads(Path(file).read_text())}  # one bundle held at a time
            entries = bundles[file].get("entry", [{"resource": bundles[file]}]) \
                if bundles[file].get("resourceType") == "Bundle" else [{"resource": bundles[file]}]
            out.append(entries[-1 - offset]["resource"])
    return out


# ------------------------------------------------------------------ one patient
def init_worker() -> None:
    """One runtime per worker process: terminology, lexicons and templates loaded once (shared
    with the parent when it loaded them before the fork), no store: nothing is recorded."""
    global _RUNTIME
    from .config import Settings
    from .logs import configure
    from .runtime import build_runtime
    settings = Settings.from_env(overrides={"log_level": "ERROR"})
    configure(settings.log_level)
    _RUNTIME = build_runtime(settings, store=None)


def _encounter_of(resource: dict) -> str | None:
    candidates = [resource.get("encounter")] + [
        e for e in ((resource.get("context") or {}).get("encounter") or []) if isinstance(e, dict)]
    for ref in candidates:
        reference = (ref or {}).get("reference", "") if isinstance(ref, dict) else ""
        if "Encounter/" in reference:
            return reference.rsplit("Encounter/", 1)[1]
    return None


def audit_patient(resources: list[dict]) -> list[dict]:
    """The cards the rules give for each encounter of one patient (rows of the CSV)."""
    from .bundles import hook_request_from_bundle
    from .errors import Problem
    from .pipeline import Call, answer_hook
    from .services import ENCOUNTER_SIGN

    if _RUNTIME is None:
        init_worker()
    runtime = _RUNTIME
    call = Call(runtime.settings.public_base_url or RULES_URL, origin=None, screen=False)
    patient = next((patient_of(r) for r in resources if patient_of(r)), "(no patient)")
    encounters = {r["id"]: r for r in resources if r.get("resourceType") == "Encounter" and r.get("id")}
    groups: dict[str | None, list[dict]] = defaultdict(list)
    shared = []
    for resource in resources:
        if resource.get("resourceType") == "Encounter":
            continue
        encounter = _encounter_of(resource)
        (groups[encounter] if encounter else shared).append(resource)
    keys = list(groups) or [None]
    rows = []
    for encounter in keys:
        record = groups.get(encounter, []) + shared + ([encounters[encounter]] if encounter in encounters else [])
        bundle = {"resourceType": "Bundle", "entry": [{"resource": r} for r in record]}
        body = hook_request_from_bundle(bundle, "encounter-sign")
        body["context"].setdefault("encounterId", encounter or "unknown")
        if encounter not in encounters:
            body["prefetch"]["encounter"] = None
        body["hookInstance"] = str(uuid.uuid4())
        try:
            answer = answer_hook(runtime, ENCOUNTER_SIGN, body, call).response
        except Problem as problem:
            rows.append({"patient": patient, "encounter": encounter or "", "rule": "(not evaluated)",
                         "summary": "; ".join(i.diagnostics for i in problem.issues)})
            continue
        for card in answer["cards"]:
            payload = card["extension"]["spine-coding-cds"]
            rows.append({
                "patient": patient, "encounter": encounter or "", "rule": payload["rule"],
                "kind": card["source"]["topic"]["code"], "indicator": card["indicator"], "summary": card["summary"],
                "current_codes": " ".join(payload["currentCodes"]), "proposed_codes": " ".join(payload["proposedCodes"]),
                "missing_documentation": " ".join(payload.get("missingDocumentation", [])),
                "evidence": " | ".join(f'{e["reference"]}: {e["text"]}' for e in payload["evidence"]),
            })
    return rows


def _job(job: tuple[str, list[tuple[str, int]]]) -> list[dict] | dict:
    """The patient's rows, or {"unreadable": patient, "stage", "error"} when reading or evaluating them
    raised: the error's type only (a message may quote the chart)."""
    patient, places = job
    stage = "reading"
    try:
        resources = read_resources(places)
        stage = "evaluating"
        return audit_patient(resources)
    except Exception as exc:  # noqa: BLE001 - one patient's data must not stop the audit
        return {"unreadable": patient, "stage": stage, "error": type(exc).__name__}


# ------------------------------------------------------------------ the whole export
def run(path: Path, out: Path, workers: int | None = None, progress=sys.stderr) -> dict:
    started = time.monotonic()
    patients, resources = index(path)
    out.mkdir(parents=True, exist_ok=True)
    counts_rule: Counter = Counter()
    counts_kind: Counter = Counter()
    examples: dict[str, list[dict]] = defaultdict(list)
    done = cards = 0
    workers = workers or os.cpu_count() or 1
    jobs = list(patients.items())
    unreadable: list[dict] = [{"unreadable": line, "stage": "indexing", "error": "unparseable line"}
                              for line in UNREADABLE_LINES]
    with open(out / "audit.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        context = mp.get_context("fork")
        with context.Pool(workers, initializer=init_worker) as pool:
            for rows in pool.imap_unordered(_job, jobs, chunksize=4):
                done += 1
                if isinstance(rows, dict):  # a patient that could not be read: reported, skipped
                    unreadable.append(rows)
                    rows = []
                for row in rows:
                    writer.writerow(csv_row({k: row.get(k, "") for k in COLUMNS}))  # no formulas
                    if row["rule"] != "(not evaluated)":
                        cards += 1
                        counts_rule[row["rule"]] += 1
                        counts_kind[row.get("kind", "")] += 1
                        if len(examples[row["rule"]]) < 3:
                            examples[row["rule"]].append(row)
                if progress and (done % 10 == 0 or done == len(jobs)):
                    rate = done / max(time.monotonic() - started, 1e-6)
                    print(f"\raudit: patients {done}/{len(jobs)} ({100 * done // max(len(jobs), 1)} %), "
                          f"cards {cards}, {rate:.1f} patients/s", end="", file=progress, flush=True)
    if progress:
        print(file=progress)
    summary = {"patients": len(jobs), "resources": resources, "cards": cards, "by_rule": dict(counts_rule),
               "by_kind": dict(counts_kind), "seconds": round(time.monotonic() - started, 2), "workers": workers,
               "unreadable": len(unreadable),
               "unreadable_patients": [{"patient": u["unreadable"], "stage": u["stage"], "error": u["error"]}
                                       for u in unreadable]}
    (out / "audit.html").write_text(_html(summary, examples))
    return summary


def _html(summary: dict, examples: dict[str, list[dict]]) -> str:
    e = html_text
    rows = "".join(f"<tr><td>{e(rule)}</td><td>{n}</td></tr>" for rule, n in
                   sorted(summary["by_rule"].items(), key=lambda kv: -kv[1]))
    kinds = "".join(f"<tr><td>{e(k)}</td><td>{n}</td></tr>" for k, n in sorted(summary["by_kind"].items()))
    unread = "".join(f"<tr><td>{e(u['patient'])}</td><td>{e(u['stage'])}</td><td>{e(u['error'])}</td></tr>"
                     for u in summary.get("unreadable_patients", []))
    unread = (f"<h2>Not read ({summary.get('unreadable', 0)})</h2><p>Data that raised an error while it was read or "
              "evaluated: skipped, the audit went on.</p><table><tr><th>patient (or file:line)</th><th>stage</th>"
              f"<th>error</th></tr>{unread}</table>") if unread else ""
    blocks = []
    for rule, items in sorted(examples.items()):
        lis = "".join(f"<li><b>{e(i['summary'])}</b><br><small>patient {e(i['patient'])}, encounter "
                      f"{e(i['encounter'])}</small><br><q>{e(i['evidence'])}</q></li>" for i in items)
        blocks.append(f"<h3>{e(rule)}</h3><ul>{lis}</ul>")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Spine Coding CDS audit</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
td,th{{border-bottom:1px solid #dde;padding:.3rem .6rem;text-align:left}}table{{border-collapse:collapse}}</style></head><body>
<h1>Audit</h1><p>{summary['patients']} patients, {summary['resources']} resources, {summary['cards']} cards
in {summary['seconds']} s on {summary['workers']} workers; {summary.get('unreadable', 0)} not read.</p>{unread}
<h2>Cards per rule</h2><table><tr><th>rule</th><th>cards</th></tr>{rows}</table>
<h2>Cards per kind</h2><table><tr><th>kind</th><th>cards</th></tr>{kinds}</table>
<h2>Examples with their evidence</h2>{''.join(blocks)}</body></html>"""
