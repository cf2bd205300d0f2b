"""A Bulk Data export of N patients, generated reproducibly (fixed seed), for the audit's figures and tests.

    .venv/bin/python bench/gen_export.py OUT [--patients 20000] [--seed 13] [--spine-share 0.15]

Writes what a `$export` writes: one NDJSON file per resource type (Patient, Encounter, Condition,
Procedure, DiagnosticReport, DocumentReference; patients in order, as a server writes them) and the
`manifest.json` of the completed export. The mix:

- most patients (85 % by default) have no spine findings: one to three finished encounters, a few
  Conditions with everyday ICD-10-CM codes (hypertension, diabetes, asthma ...), a lab or chest
  imaging report with a short conclusion, progress notes (base64 text/plain) of ordinary
  examination and history sentences, sometimes an office-visit Procedure;
- the others carry the record of one of the vignettes (fhir_fixtures/vignettes/*.json) or of the
  full-length charts (fhir_fixtures/charts/*.toml, built by fhir_fixtures/build_charts.py): their
  Conditions, DiagnosticReports with report text, DocumentReferences with base64 notes,
  Procedures and Encounter (a chart's prior encounter too), given the patient's own ids; some get
  cards, some are silent, as their source says.

Every note and report text gets a line of its own (a dictation job number), so no two patients
share a text: the reader caches texts by content, and an export that repeated them would measure
the cache. 20,000 patients (about 150 MB) are written in a few seconds.
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import random
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
BASE = "https://ehr.example.org/fhir"
TRANSACTION_TIME = "2026-11-21T02:00:00Z"
TYPES = ["Patient", "Encounter", "Condition", "Procedure", "DiagnosticReport", "DocumentReference"]
PREFETCH = {"conditions": "Condition", "procedures": "Procedure", "diagnosticReports": "DiagnosticReport",
            "documentReferences": "DocumentReference"}
TOKEN = "@P@"  # the patient id in a template, replaced per patient
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
CODES = [("I10", "Essential (primary) hypertension"), ("E11.9", "Type 2 diabetes mellitus without complications"),
         ("E78.5", "Hyperlipidemia, unspecified"), ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
         ("J45.909", "Unspecified asthma, uncomplicated"), ("F41.1", "Generalized anxiety disorder"),
         ("M25.511", "Pain in right shoulder"), ("G47.33", "Obstructive sleep apnea"),
         ("N39.0", "Urinary tract infection, site not specified"), ("R51.9", "Headache, unspecified"),
         ("Z79.899", "Other long term (current) drug therapy"), ("H52.4", "Presbyopia"), ("L40.0", "Psoriasis vulgaris"),
         ("E03.9", "Hypothyroidism, unspecified"), ("J06.9", "Acute upper respiratory infection, unspecified"),
         ("M17.11", "Unilateral primary osteoarthritis, right knee"), ("I48.91", "Unspecified atrial fibrillation")]
REPORTS = [("58410-2", "CBC panel", ["Hemoglobin and white cell count within normal limits.",
                                     "Mild normocytic anemia.", "Platelets are normal."]),
           ("24323-8", "Comprehensive metabolic panel", ["Electrolytes within normal limits.",
                                                         "Glucose mildly elevated.", "Renal function is normal."]),
           ("36643-5", "XR Chest 2 Views", ["No acute cardiopulmonary process.", "Heart size is normal.",
                                            "Lungs are clear. No pleural effusion."]),
           ("4548-4", "Hemoglobin A1c", ["A1c above goal.", "A1c at goal."])]
SENTENCES = [
    "Lungs are clear to auscultation bilaterally.", "Heart has a regular rate and rhythm without murmur.",
    "Abdomen is soft and non-tender.", "The patient is alert and oriented to person, place and time.",
    "Medications were reconciled today.", "No known drug allergies.", "Follow-up in six weeks or sooner if needed.",
    "Discussed the risks and benefits of the options.", "Sleep has improved since the last visit.",
    "Gait is steady without assistance.", "Diet and exercise were reviewed.", "Denies chest pain or shortness of breath.",
    "Blood sugars at home have been in range.", "Continue the current dose of lisinopril.",
    "Influenza vaccine given today.", "Knee pain is worse with stairs.", "Skin is warm and dry.",
    "Mood is stable on the current medication.", "Refilled metformin.", "Counselled on smoking cessation.",
]
VISIT_TYPES = [("AMB", "ambulatory"), ("AMB", "ambulatory"), ("AMB", "ambulatory"), ("EMER", "emergency"),
               ("IMP", "inpatient encounter")]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ spine records, from the fixtures
def _renamed(value, ids: dict[str, str]):
    if isinstance(value, dict):
        return {k: (ids.get(v, v) if k == "reference" and isinstance(v, str) else _renamed(v, ids))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, ids) for v in value]
    return value


def _template(request: dict) -> bytes:
    """A hook request's record as the resources of one export patient, ids written with TOKEN."""
    prefetch = request["prefetch"]
    patient, encounter = request["context"]["patientId"], request["context"].get("encounterId", "ve-1")
    resources = [dict(prefetch["patient"]), dict(prefetch["encounter"])]
    for key in PREFETCH:
        resources += [dict(e["resource"]) for e in (prefetch.get(key) or {}).get("entry", [])]
    ids = {f"Patient/{patient}": f"Patient/{TOKEN}", f"Encounter/{encounter}": f"Encounter/{TOKEN}-e1",
           "Encounter/ve-prior": f"Encounter/{TOKEN}-e0"}
    for r in resources[2:]:
        ids[f"{r['resourceType']}/{r['id']}"] = f"{r['resourceType']}/{TOKEN}-{r['id']}"
    text = orjson.dumps(resources).decode()
    prior = "Encounter/ve-prior" in text
    resources = _renamed(resources, ids)
    resources[0]["id"], resources[1]["id"] = TOKEN, f"{TOKEN}-e1"
    resources[1]["status"] = "finished"  # an export is of past encounters
    for r in resources[2:]:
        r["id"] = f"{TOKEN}-{r['id']}"
        if r["resourceType"] in ("DiagnosticReport", "Procedure"):
            r.setdefault("encounter", {"reference": f"Encounter/{TOKEN}-e1"})
    if prior:
        earlier = dict(resources[1], id=f"{TOKEN}-e0")
        earlier.pop("diagnosis", None)
        earlier["period"] = {"start": "2026-08-14T09:00:00-05:00", "end": "2026-08-14T10:00:00-05:00"}
        resources.insert(2, earlier)
    return orjson.dumps(resources)


def templates() -> list[bytes]:
    """The vignettes' and the charts' records (in name order), as templates."""
    out = [_template(orjson.loads(p.read_bytes())) for p in sorted((FIXTURES / "vignettes").glob("*.json"))]
    charts = _load("build_charts", FIXTURES / "build_charts.py")
    out += [_template(charts.build(charts.load(p))) for p in sorted((FIXTURES / "charts").glob("*.toml"))]
    return out


def _unique(data: str, line: str) -> str:
    return base64.b64encode(base64.b64decode(data) + f"\n{line}\n".encode()).decode()


def spine_patient(template: bytes, pid: str) -> list[dict]:
    resources = orjson.loads(template.replace(TOKEN.encode(), pid.encode()))
    for n, r in enumerate(resources):
        job = f"Dictation job {pid}-{n}."
        if r["resourceType"] == "DocumentReference":
            for content in r.get("content") or []:
                attachment = content.get("attachment") or {}
                if attachment.get("data"):
                    attachment["data"] = _unique(attachment["data"], job)
        elif r["resourceType"] == "DiagnosticReport":
            if r.get("conclusion"):
                r["conclusion"] = f"{r['conclusion']} {job}"
            for form in r.get("presentedForm") or []:
                if form.get("data"):
                    form["data"] = _unique(form["data"], job)
    return resources


# ------------------------------------------------------------------ everyday records
def _day(rng: random.Random) -> str:
    return f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"


def plain_patient(rng: random.Random, pid: str) -> list[dict]:
    ref = {"reference": f"Patient/{pid}"}
    out: list[dict] = [{"resourceType": "Patient", "id": pid, "gender": rng.choice(["female", "male"]),
                        "birthDate": f"{rng.randint(1930, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}]
    for e in range(rng.randint(1, 3)):
        enc, day = f"{pid}-e{e + 1}", _day(rng)
        code, display = rng.choice(VISIT_TYPES)
        out.append({"resourceType": "Encounter", "id": enc, "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code,
                              "display": display},
                    "subject": ref, "period": {"start": f"{day}T09:00:00-05:00", "end": f"{day}T09:40:00-05:00"}})
        at = {"reference": f"Encounter/{enc}"}
        for c in range(rng.randint(1, 4)):
            icd, text = rng.choice(CODES)
            out.append({"resourceType": "Condition", "id": f"{enc}-c{c + 1}",
                        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                       "code": "active"}]},
                        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                                           "code": "confirmed"}]},
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                                  "code": "encounter-diagnosis"}]}],
                        "code": {"coding": [{"system": ICD10, "code": icd, "display": text}], "text": text},
                        "subject": ref, "encounter": at, "recordedDate": day})
        for r in range(rng.choice([0, 0, 1, 1, 2])):
            loinc, name, conclusions = rng.choice(REPORTS)
            out.append({"resourceType": "DiagnosticReport", "id": f"{enc}-dr{r + 1}", "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": loinc, "display": name}], "text": name},
                        "subject": ref, "encounter": at, "effectiveDateTime": f"{day}T08:30:00-05:00",
                        "conclusion": f"{rng.choice(conclusions)} Accession {pid}-{e}-{r}."})
        for n in range(rng.choice([0, 1, 1, 2])):
            sentences = rng.sample(SENTENCES, rng.randint(5, 12))
            sentences.insert(1, f"Blood pressure {rng.randint(104, 168)}/{rng.randint(60, 98)}, pulse "
                                f"{rng.randint(52, 104)}, temperature 36.{rng.randint(1, 9)} C.")
            text = "Progress note.\n" + " ".join(sentences) + f"\nDictation job {pid}-{e}-{n}.\n"
            out.append({"resourceType": "DocumentReference", "id": f"{enc}-note{n + 1}", "status": "current",
                        "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}]},
                        "subject": ref, "date": f"{day}T10:15:00-05:00",
                        "content": [{"attachment": {"contentType": "text/plain",
                                                    "data": base64.b64encode(text.encode()).decode()}}],
                        "context": {"encounter": [at]}})
        if rng.random() < 0.3:
            out.append({"resourceType": "Procedure", "id": f"{enc}-pr1", "status": "completed",
                        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213",
                                             "display": "Office visit, established patient"}]},
                        "subject": ref, "encounter": at, "performedDateTime": f"{day}T09:10:00-05:00"})
    return out


# ------------------------------------------------------------------ the export
def generate(out: Path, patients: int = 20_000, seed: int = 13, spine_share: float = 0.15) -> dict[str, int]:
    """Writes the export into `out`; returns the count of resources per type."""
    rng = random.Random(seed)
    spine = templates()
    out.mkdir(parents=True, exist_ok=True)
    handles = {kind: open(out / f"{kind}.ndjson", "wb") for kind in TYPES}
    counts = dict.fromkeys(TYPES, 0)
    try:
        for n in range(patients):
            pid = f"gp{n:07d}"
            if rng.random() < spine_share:
                resources = spine_patient(spine[rng.randrange(len(spine))], pid)
            else:
                resources = plain_patient(rng, pid)
            for resource in resources:
                kind = resource["resourceType"]
                handles[kind].write(orjson.dumps(resource) + b"\n")
                counts[kind] += 1
    finally:
        for handle in handles.values():
            handle.close()
    manifest = {"transactionTime": TRANSACTION_TIME, "request": f"{BASE}/Patient/$export?_type={','.join(TYPES)}",
                "requiresAccessToken": True,
                "output": [{"type": kind, "url": f"{BASE}/bulk-files/{kind}.ndjson", "count": counts[kind]}
                           for kind in TYPES], "error": []}
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the export into")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--spine-share", type=float, default=0.15, help="share of patients with a spine record")
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = generate(args.out, args.patients, args.seed, args.spine_share)
    size = sum(p.stat().st_size for p in args.out.glob("*.ndjson"))
    print(f"wrote {args.patients} patients, {sum(counts.values())} resources ({size / 2**20:.0f} MB) to {args.out} "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
