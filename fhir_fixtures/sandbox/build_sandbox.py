"""Build the requests of fhir_fixtures/sandbox/: order-select calls shaped as the CDS Hooks sandbox's
PAMA Imaging screen sends them, and the patient record they are made on.

Where the shape was copied from (cds-hooks/sandbox, the code search index's copies):
- the context, `src/components/Pama/pama.jsx` (commit 046e642b130fdb29b973a32e09b75f4357676a89),
  `pamaTriggerHandler.generateContext`: `selections: ["ServiceRequest/example-request-id"]` and a
  `draftOrders` Bundle without `type` holding one ServiceRequest `example-request-id`, status
  `draft`, intent `plan`, `code.coding` [{system CPT, code}], `subject` the current patient and
  `reasonCode` [{coding: [{system "http://snomed.info/sct", code}]}]: system and code, no display;
  tests/components/Pama/pama.test.js checks the same shape;
- the envelope, `src/retrieve-data-helpers/service-exchange.js`, `callServices`: `hookInstance`
  (uuid v4), `hook`, `fhirServer`, `context` ({patientId, userId} first, then the screen's keys),
  `prefetch` with the keys the sandbox could fetch from its FHIR server (it replaces only the
  patientId and userId tokens, so `Encounter/{{context.encounterId}}` is never fetched and that key
  is absent), no `fhirAuthorization` (it is sent only when the sandbox is SMART-launched).
The sandbox's default user is Practitioner/COREPRACTITIONER1 (shared/research/cdshooks.md §10).

Newer versions of the screen send the coding of their code lists (`studyCoding`, `reasonCodings`,
from src/assets/pama-procedure-codes.json and pama-reason-codes.json), which carry a display; the
service reads system and code only, so tests/test_order_select.py sends both shapes.

The record (`pama-patient_bundle.json`, a transaction Bundle any FHIR server takes; the same
resources are the requests' prefetch) documents a right C2 radiculopathy; its Condition is coded in
SNOMED CT only, as the sandbox's FHIR servers hold them.

Run: .venv/bin/python fhir_fixtures/sandbox/build_sandbox.py (tests/test_order_select.py checks the
committed files match).
"""
from __future__ import annotations

import base64
import json
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPT = "http://www.ama-assn.org/go/cpt"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
PATIENT = "pama-1"
FHIR_SERVER = "https://launch.smarthealthit.org/v/r4/fhir"
USER = "Practitioner/COREPRACTITIONER1"
ORDER_ID = "example-request-id"

CERVICAL_RADICULOPATHY = "54404000"   # knowledge/snomed_map.toml: "Cervical radiculopathy (disorder)"
MRI_CERVICAL = "72141"                # MRI cervical spinal canal without contrast
MRI_KNEE = "73721"                    # MRI of a joint of the lower extremity without contrast
# The displays of the sandbox's code lists (src/assets/pama-procedure-codes.json; the reason's FSN as
# the issue quotes the PAMA screen), for the newer screens that send them.
DISPLAYS = {
    MRI_CERVICAL: "Magnetic resonance (eg, proton) imaging, spinal canal and contents, cervical; without contrast material",
    MRI_KNEE: "Magnetic resonance (eg, proton) imaging, any joint of lower extremity; without contrast material",
    CERVICAL_RADICULOPATHY: "Cervical radiculopathy (disorder)",
}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def record() -> list[dict]:
    """The patient's resources, as a FHIR server holds them."""
    subject = {"reference": f"Patient/{PATIENT}"}
    return [
        {"resourceType": "Patient", "id": PATIENT, "name": [{"family": "Atlas", "given": ["Ada"]}],
         "gender": "female", "birthDate": "1961-03-14"},
        {"resourceType": "Condition", "id": "pama-cond-1",
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                            "code": "confirmed"}]},
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                   "code": "problem-list-item"}]}],
         "code": {"coding": [{"system": SNOMED, "code": CERVICAL_RADICULOPATHY, "display": "Cervical radiculopathy"}],
                  "text": "Cervical radiculopathy"},
         "subject": subject, "recordedDate": "2026-10-02"},
        {"resourceType": "DiagnosticReport", "id": "pama-dr-1", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "30667-0", "display": "MR Cervical spine WO contrast"}],
                  "text": "MRI cervical spine without contrast"},
         "subject": subject, "effectiveDateTime": "2026-10-20T14:30:00-05:00",
         "conclusion": "Right C1-C2 foraminal stenosis with compression of the right C2 nerve root."},
        {"resourceType": "Procedure", "id": "pama-proc-1", "status": "completed",
         "code": {"coding": [{"system": CPT, "code": "97110", "display": "Therapeutic exercise"}]},
         "subject": subject, "performedPeriod": {"start": "2026-08-01", "end": "2026-10-24"}},
        {"resourceType": "DocumentReference", "id": "pama-note-1", "status": "current",
         "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}]},
         "subject": subject, "date": "2026-10-27T10:15:00-05:00",
         "content": [{"attachment": {"contentType": "text/plain", "data": _b64(
             "Denies trauma. Right C2 radiculopathy with suboccipital pain and occipital scalp numbness "
             "despite 12 weeks of physical therapy.")}}]},
    ]


def _searchset(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{FHIR_SERVER}/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in resources]}


def prefetch() -> dict:
    """What the sandbox fetches for the service's prefetch templates (all but `encounter`)."""
    by_type: dict[str, list] = {}
    for resource in record():
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return {"patient": by_type["Patient"][0], "conditions": _searchset(by_type["Condition"]),
            "procedures": _searchset(by_type["Procedure"]),
            "diagnosticReports": _searchset(by_type["DiagnosticReport"]),
            "documentReferences": _searchset(by_type["DocumentReference"])}


def service_request(cpt: str, reason: str | None, order_id: str = ORDER_ID, displays: bool = False) -> dict:
    """A draft imaging order as pama.jsx writes it (with the code lists' displays when asked)."""
    code = {"system": CPT, "code": cpt}
    resource = {"resourceType": "ServiceRequest", "id": order_id, "status": "draft", "intent": "plan",
                "code": {"coding": [dict(code, display=DISPLAYS[cpt]) if displays else code]},
                "subject": {"reference": f"Patient/{PATIENT}"}}
    if reason is not None:
        coding = {"system": SNOMED, "code": reason}
        resource["reasonCode"] = [{"coding": [dict(coding, display=DISPLAYS[reason]) if displays else coding]}]
    return resource


def order_select(name: str, orders: list[dict], selections: list[str]) -> dict:
    return {
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:spine-coding-cds:sandbox:{name}")),
        "hook": "order-select",
        "fhirServer": FHIR_SERVER,
        "context": {"patientId": PATIENT, "userId": USER, "selections": selections,
                    "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]}},
        "prefetch": prefetch(),
    }


def requests() -> dict[str, dict]:
    """File name → request (or Bundle)."""
    selected = [f"ServiceRequest/{ORDER_ID}"]
    knee = service_request(MRI_KNEE, CERVICAL_RADICULOPATHY, order_id="knee-mri-request")
    return {
        # the done-when: one card proposing M54.11 as the order's reason
        "order-select_pama_c2-radiculopathy.json": order_select(
            "c2-radiculopathy", [service_request(MRI_CERVICAL, CERVICAL_RADICULOPATHY)], selected),
        # the same call with an unrelated study: {"cards": []}
        "order-select_pama_knee-mri.json": order_select(
            "knee-mri", [service_request(MRI_KNEE, CERVICAL_RADICULOPATHY)], selected),
        # two draft orders, the cervical MRI not selected: context only, no card about it
        "order-select_pama_not-selected.json": order_select(
            "not-selected", [service_request(MRI_CERVICAL, CERVICAL_RADICULOPATHY), knee],
            ["ServiceRequest/knee-mri-request"]),
        # a selection naming no order of draftOrders: 400
        "order-select_pama_missing-selection.json": order_select(
            "missing-selection", [service_request(MRI_CERVICAL, CERVICAL_RADICULOPATHY)],
            ["ServiceRequest/no-such-order"]),
        # the record, for a FHIR server (the sandbox's own, or any)
        "pama-patient_bundle.json": {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, r['resourceType'] + '/' + r['id'])}",
             "resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in record()]},
    }


def rendered() -> dict[str, str]:
    return {name: json.dumps(body, indent=2) + "\n" for name, body in requests().items()}


def main() -> int:
    for name, text in rendered().items():
        (HERE / name).write_text(text)
    print(f"wrote {len(rendered())} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
