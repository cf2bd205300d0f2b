"""Build the vignette hook requests of fhir_fixtures/vignettes/ from fhir_fixtures/vignettes.toml.

Each vignette is a coder's worked example: a record (conditions, reports, notes, procedures,
draft orders) and the cards it must produce (`expect`), or none. The TOML is what a coding
specialist reads and edits; this script turns it into full CDS Hooks requests with prefetch.
tests/test_vignettes.py checks that the committed JSON matches this script's output, so the
two cannot drift. Run: .venv/bin/python fhir_fixtures/build_vignettes.py

Draft orders (`orders`) are ServiceRequests by CPT (`cpt`), or MedicationRequests by RxNorm
(`medication` = its name, `rxnorm` = its code). They go in context.draftOrders; a vignette of
another hook that lists orders sends them there too (an EHR that passes pending orders along
with encounter-sign), so the order-sign-only rules can be checked to stay silent. An order's
reasons are ICD-10-CM codes (`reasons`) or SNOMED CT concepts alone (`snomed_reasons`, SCTIDs,
sent as the CDS Hooks sandbox's PAMA screen sends them: system and code, no display).

order-select vignettes (`hook = "order-select"`) send `selections`: the orders listed by index in
`selections` (0 for the first), every order when the key is absent.
"""
from __future__ import annotations

import base64
import json
import sys
import tomllib
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "vignettes.toml"
OUT = HERE / "vignettes"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
PATIENT = "vp-1"
ENCOUNTER = "ve-1"

STUDIES = {  # LOINC codes from shared/research/terminology.md §3.1
    "mri-cervical": ("30667-0", "MR Cervical spine WO contrast"),
    "ct-cervical": ("30592-0", "CT Cervical spine WO contrast"),
    "flexion-extension": ("24945-8", "XR Cervical spine Views W flexion and W extension"),
    "xr-cervical": ("24946-6", "XR Cervical spine Views"),
    "emg": ("18749-2", "Electromyogram study"),
    "mri-lumbar": (None, "MRI lumbar spine"),
}
CPT_NAMES = {
    "22590": "Arthrodesis, posterior, craniocervical (occiput-C2)", "22595": "Arthrodesis, posterior, atlas-axis",
    "22548": "Arthrodesis, anterior transoral, clivus-C1-C2", "22551": "Anterior discectomy and fusion below C2",
    "72141": "MRI cervical spinal canal without contrast", "72125": "CT cervical spine without contrast",
    "64405": "Injection, greater occipital nerve", "97110": "Therapeutic exercise", "97012": "Mechanical traction",
    "95886": "Needle EMG with nerve conduction, complete extremity",
    "85025": "Complete blood count (CBC) with automated differential",
    "73721": "MRI lower extremity joint without contrast",
    "72133": "CT lumbar spine without and with contrast",
}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:spine-coding-cds:vignette:{name}"))


def _searchset(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                      for r in resources]}


def _condition_coding(spec: dict) -> dict:
    """A Condition's coding: ICD-10-CM, or SNOMED CT alone (`system = "snomed"`, the SCTID as `code`,
    its term as `display`), as problem lists mapped to ICD-10-CM only at billing send it."""
    if spec.get("system") == "snomed":
        coding = {"system": SNOMED, "code": spec["code"]}
        if spec.get("display"):
            coding["display"] = spec["display"]
        return coding
    return {"system": ICD, "code": spec["code"]}


def _condition(n: int, spec: dict) -> dict:
    resource = {
        "resourceType": "Condition", "id": f"cond-{n}",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": spec.get("clinical", "active")}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": spec.get("verification", "confirmed")}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": spec.get("category", "encounter-diagnosis")}]}],
        "code": {"coding": [_condition_coding(spec)]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "encounter": {"reference": f"Encounter/{ENCOUNTER}"},
        "recordedDate": "2026-11-20",
    }
    if spec.get("text"):
        resource["code"]["text"] = spec["text"]
    if spec.get("note"):
        resource["note"] = [{"text": spec["note"]}]
    return resource


def _report(n: int, spec: dict) -> dict:
    loinc, name = STUDIES[spec["study"]]
    code = {"coding": [{"system": LOINC, "code": loinc, "display": name}], "text": name} if loinc else {"text": name}
    resource = {
        "resourceType": "DiagnosticReport", "id": f"dr-{n}", "status": spec.get("status", "final"),
        "code": code, "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": spec.get("date", "2026-11-02T14:30:00-05:00"),
    }
    if spec.get("conclusion"):
        resource["conclusion"] = spec["conclusion"]
    if spec.get("text"):
        resource["presentedForm"] = [{"contentType": "text/plain; charset=utf-8", "data": _b64(spec["text"])}]
    return resource


def _note(n: int, text: str) -> dict:
    html = text.lstrip().startswith("<")
    return {
        "resourceType": "DocumentReference", "id": f"note-{n}", "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}]},
        "subject": {"reference": f"Patient/{PATIENT}"}, "date": "2026-11-20T10:15:00-05:00",
        "content": [{"attachment": {"contentType": "text/html" if html else "text/plain", "data": _b64(text)}}],
        "context": {"encounter": [{"reference": f"Encounter/{ENCOUNTER}"}]},
    }


def _procedure(n: int, spec: dict) -> dict:
    resource = {
        "resourceType": "Procedure", "id": f"proc-{n}", "status": spec.get("status", "completed"),
        "code": {"coding": [{"system": CPT, "code": spec["cpt"], "display": CPT_NAMES.get(spec["cpt"], spec["cpt"])}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    if spec.get("start"):
        resource["performedPeriod"] = {"start": spec["start"], "end": spec["end"]}
    if spec.get("note"):
        resource["note"] = [{"text": spec["note"]}]
    return resource


def _order(n: int, spec: dict, conditions: list[dict]) -> dict:
    if "medication" in spec:
        return _medication_order(n, spec, conditions)
    resource = {
        "resourceType": "ServiceRequest", "id": f"order-{n}", "status": "draft", "intent": "order",
        "code": {"coding": [{"system": CPT, "code": spec["cpt"], "display": CPT_NAMES.get(spec["cpt"], spec["cpt"])}]},
        "subject": {"reference": f"Patient/{PATIENT}"}, "encounter": {"reference": f"Encounter/{ENCOUNTER}"},
    }
    return _with_reasons(resource, spec, conditions)


def _with_reasons(resource: dict, spec: dict, conditions: list[dict]) -> dict:
    if spec.get("reasons"):
        resource["reasonCode"] = [{"coding": [{"system": ICD, "code": c}]} for c in spec["reasons"]]
    if spec.get("snomed_reasons"):
        resource.setdefault("reasonCode", []).extend(
            {"coding": [{"system": SNOMED, "code": c}]} for c in spec["snomed_reasons"])
    if "reason_condition" in spec:
        resource["reasonReference"] = [{"reference": f"Condition/{conditions[spec['reason_condition']]['id']}"}]
    return resource


def _medication_order(n: int, spec: dict, conditions: list[dict]) -> dict:
    resource = {
        "resourceType": "MedicationRequest", "id": f"order-{n}", "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": spec["rxnorm"], "display": spec["medication"]}],
                                      "text": spec["medication"]},
        "subject": {"reference": f"Patient/{PATIENT}"}, "encounter": {"reference": f"Encounter/{ENCOUNTER}"},
    }
    return _with_reasons(resource, spec, conditions)


def build(vignette: dict) -> dict:
    name = vignette["id"]
    hook = vignette.get("hook", "encounter-sign")
    conditions = [_condition(n + 1, c) for n, c in enumerate(vignette.get("conditions", []))]
    ranks = vignette.get("ranks") or list(range(1, len(conditions) + 1))
    encounter = {
        "resourceType": "Encounter", "id": ENCOUNTER, "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                  "code": vignette.get("encounter_class", "AMB")},
        "subject": {"reference": f"Patient/{PATIENT}"}, "period": {"start": "2026-11-20T09:00:00-05:00"},
    }
    if conditions:
        encounter["diagnosis"] = [{"condition": {"reference": f"Condition/{c['id']}"}, "rank": r}
                                  for c, r in zip(conditions, ranks)]
    prefetch = {
        "patient": {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1958-06-02"},
        "encounter": encounter,
        "conditions": _searchset(conditions),
        "procedures": _searchset([_procedure(n + 1, p) for n, p in enumerate(vignette.get("procedures", []))]),
        "diagnosticReports": _searchset([_report(n + 1, r) for n, r in enumerate(vignette.get("reports", []))]),
        "documentReferences": _searchset([_note(n + 1, t) for n, t in enumerate(vignette.get("notes", []))]),
    }
    for key in vignette.get("unavailable", []):
        del prefetch[key]
    context = {"userId": "Practitioner/vignette-md", "patientId": PATIENT, "encounterId": ENCOUNTER}
    if hook in ("order-sign", "order-select") or vignette.get("orders"):
        orders = [_order(n + 1, o, conditions) for n, o in enumerate(vignette.get("orders", []))]
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": o} for o in orders]}
        if hook == "order-select":
            chosen = vignette.get("selections", range(len(orders)))
            context["selections"] = [f"{orders[n]['resourceType']}/{orders[n]['id']}" for n in chosen]
    return {"hookInstance": _uuid(name), "hook": hook, "context": context, "prefetch": prefetch}


def load_spec() -> list[dict]:
    with open(SPEC, "rb") as fh:
        vignettes = tomllib.load(fh)["vignette"]
    ids = [v["id"] for v in vignettes]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise SystemExit(f"duplicate vignette ids: {sorted(duplicates)}")
    return vignettes


def rendered() -> dict[str, str]:
    """File name → JSON text of every vignette."""
    return {f"{v['id']}.json": json.dumps(build(v), indent=2) + "\n" for v in load_spec()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    files = rendered()
    for old in OUT.glob("*.json"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(files)} vignettes to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
