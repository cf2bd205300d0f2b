"""Build fhir_fixtures/export/: a small FHIR Bulk Data export ($export output) from the vignettes.

What `spine-cds audit fhir_fixtures/export/ --out audit/` (the README's example) reads: one NDJSON
file per resource type (Patient, Encounter, Condition, Procedure, DiagnosticReport,
DocumentReference; one resource a line, in the order a server writes them: by patient), and the
`manifest.json` a Bulk Data status request answers with when the export is complete (its `output`
lists each file with its count). The audit reads the NDJSON files and skips the manifest.

Six patients, seven encounters, taken from vignettes (fhir_fixtures/vignettes/*.json, built from
vignettes.toml), each vignette's record given its own patient, encounter and resource ids as one
EHR's export would have them: some records get cards, some are silent (the vignettes say which;
tests/test_cli.py checks the audit's cards against each source vignette's answer). Patient exp-pt-6
has two encounters (a visit a week before, its dates moved back seven days), so the audit's
grouping by encounter is exercised. Every DiagnosticReport and Procedure names its encounter, as
exports usually do (the vignettes leave it out: a hook call's prefetch is one encounter's).

Run: .venv/bin/python fhir_fixtures/build_export.py   (tests/test_cli.py checks the committed files
are this script's output, so the two cannot drift.)
"""
from __future__ import annotations

import copy
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
VIGNETTES = HERE / "vignettes"
OUT = HERE / "export"
BASE = "https://ehr.example.org/fhir"
TRANSACTION_TIME = "2026-11-21T02:00:00Z"  # fixed: the output is reproducible

# (patient, encounter, source vignette, days the dates move back)
SOURCES = [
    ("exp-pt-1", "exp-enc-1", "spl-specificity-fires-m43.10-c1-on-c2", 0),
    ("exp-pt-2", "exp-enc-2", "spl-trauma-fires-nondisplaced-type-ii-dens", 0),
    ("exp-pt-3", "exp-enc-3", "rad-docs-fires-emg-without-result", 0),
    ("exp-pt-4", "exp-enc-4", "spl-specificity-silent-negated-slip", 0),
    ("exp-pt-5", "exp-enc-5", "rad-ra-sequencing-silent-room-air", 0),
    ("exp-pt-6", "exp-enc-6", "spl-docs-silent-complete", 7),
    ("exp-pt-6", "exp-enc-7", "rad-cervicalgia-fires", 0),
]
TYPES = ["Patient", "Encounter", "Condition", "Procedure", "DiagnosticReport", "DocumentReference"]
PREFETCH = {"conditions": "Condition", "procedures": "Procedure", "diagnosticReports": "DiagnosticReport",
            "documentReferences": "DocumentReference"}
DATE_FIELDS = ("recordedDate", "effectiveDateTime", "date", "start", "end", "onsetDateTime", "issued")


def _shift(value, days: int):
    """Structured dates moved back `days` (the texts are left as written)."""
    if not days:
        return value
    if isinstance(value, dict):
        return {k: (_moved(v, days) if k in DATE_FIELDS and isinstance(v, str) else _shift(v, days))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, days) for v in value]
    return value


def _moved(text: str, days: int) -> str:
    day = datetime.fromisoformat(text[:10]) - timedelta(days=days)
    return day.strftime("%Y-%m-%d") + text[10:]


def _renamed(value, ids: dict[str, str]):
    """Every reference and id of the vignette's record renamed to the export's."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in ids:
                out[key] = ids[item]
            else:
                out[key] = _renamed(item, ids)
        return out
    if isinstance(value, list):
        return [_renamed(v, ids) for v in value]
    return value


def _record(patient: str, encounter: str, name: str, days: int) -> dict[str, list[dict]]:
    """One encounter's resources by type (its Patient included), renamed for the export."""
    request = json.loads((VIGNETTES / f"{name}.json").read_text())
    prefetch = request["prefetch"]
    found: dict[str, list[dict]] = {t: [] for t in TYPES}
    found["Patient"].append(copy.deepcopy(prefetch["patient"]))
    found["Encounter"].append(copy.deepcopy(prefetch["encounter"]))
    for key, kind in PREFETCH.items():
        for entry in (prefetch.get(key) or {}).get("entry", []):
            found[kind].append(copy.deepcopy(entry["resource"]))
    number = encounter.rsplit("-", 1)[1]
    ids = {f"Patient/{request['context']['patientId']}": f"Patient/{patient}",
           f"Encounter/{request['context']['encounterId']}": f"Encounter/{encounter}"}
    for kind in TYPES[2:]:
        for resource in found[kind]:
            new = f"exp-{number}-{resource['id']}"
            ids[f"{kind}/{resource['id']}"] = f"{kind}/{new}"
            resource["id"] = new
    found["Patient"][0]["id"], found["Encounter"][0]["id"] = patient, encounter
    for kind in ("DiagnosticReport", "Procedure"):
        for resource in found[kind]:
            resource.setdefault("encounter", {"reference": f"Encounter/{request['context']['encounterId']}"})
    found["Encounter"][0]["status"] = "finished"  # an export is of past encounters
    return {kind: [_shift(_renamed(r, ids), days) for r in resources] for kind, resources in found.items()}


def rendered() -> dict[str, str]:
    """File name → text of every file of the export."""
    lines: dict[str, list[str]] = {t: [] for t in TYPES}
    seen_patients: set[str] = set()
    for patient, encounter, name, days in SOURCES:
        for kind, resources in _record(patient, encounter, name, days).items():
            for resource in resources:
                if kind == "Patient":
                    if patient in seen_patients:
                        continue
                    seen_patients.add(patient)
                lines[kind].append(json.dumps(resource, separators=(",", ":"), sort_keys=True))
    files = {f"{kind}.ndjson": "".join(line + "\n" for line in lines[kind]) for kind in TYPES}
    manifest = {
        "transactionTime": TRANSACTION_TIME,
        "request": f"{BASE}/Patient/$export?_type={','.join(TYPES)}",
        "requiresAccessToken": True,
        "output": [{"type": kind, "url": f"{BASE}/bulk-files/{kind}.ndjson", "count": len(lines[kind])}
                   for kind in TYPES],
        "error": [],
    }
    files["manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    return files


def main() -> int:
    OUT.mkdir(exist_ok=True)
    files = rendered()
    for old in OUT.iterdir():
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(files)} files to {OUT.relative_to(HERE.parent)}/: "
          + ", ".join(f"{n} ({t.count(chr(10))} lines)" for n, t in files.items() if n.endswith(".ndjson")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
