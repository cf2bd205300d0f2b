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

The other screens, for the README's sandbox walkthrough and tests/test_sandbox_walkthrough.py:
- **Rx View** (order-select), `src/components/RxView/rx-view.jsx` (commit
  3f15a5b02fdc696b997bd2cc55f26fd85d3ba4e3), trigger `rx-view/order-select`: `selections:
  ["MedicationRequest/request-123"]` and `draftOrders` (no `type`) holding the MedicationRequest of
  `createFhirResource` (`src/reducers/medication-reducers.js`, commit
  1684980518803b0220557fca9b2f1df461f4811b) for an R4 server: id `request-123`, status `draft`,
  `subject`, `authoredOn` (the day), `dosageInstruction` with `doseAndRate`, `dispenseRequest` (so
  intent `order` and category `community`), `medicationCodeableConcept` (RxNorm, text and display the
  drug's name) and, when a condition is chosen under "Treating", `reasonCode` set to that Condition's
  `code`: one CodeableConcept, not an array (not R4; sent as the sandbox sends it);
- **Rx Sign** (order-sign), `src/components/RxSign/rx-sign.jsx` (commit
  14ff61c0cbd676300566932eb95552e178aa9757), trigger `rx-sign/order-sign` on "Sign Order": the same
  MedicationRequest, `draftOrders` only (no `selections`); that screen wires no "Treating" choice, so
  no `reasonCode`;
- **Patient View** (patient-view), `src/components/PatientView/patient-view.jsx` (commit
  177bd8bd5c59e2885420dc0916d525693b9436a6), trigger `face-sheet/patient-view` when the patient is
  opened: the envelope's context only (`patientId`, `userId`), no `encounterId`; its prefetch, the CDI
  review's templates but `encounter` (whose token the sandbox cannot fill).

Newer versions of the screen send the coding of their code lists (`studyCoding`, `reasonCodings`,
from src/assets/pama-procedure-codes.json and pama-reason-codes.json), which carry a display; the
service reads system and code only, so tests/test_order_select.py sends both shapes.

The record (`pama-patient_bundle.json`, a transaction Bundle any FHIR server takes; the same
resources are the requests' prefetch) documents a right C2 radiculopathy; its problem-list Condition
is coded in SNOMED CT only, as the sandbox's FHIR servers hold them. The visit of 2026-10-27 (a
finished Encounter, its progress note) coded the radiculopathy M54.10 (site unspecified) as its
diagnosis: the documentation opportunity the CDI review shows (the C2 root is documented: M54.11).

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
ENCOUNTER_ID = "pama-enc-1"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
GABAPENTIN = ("310431", "gabapentin 300 MG Oral Capsule")  # RxNorm SCD
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
        {"resourceType": "Encounter", "id": ENCOUNTER_ID, "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                   "display": "ambulatory"},
         "subject": subject, "period": {"start": "2026-10-27T09:45:00-05:00", "end": "2026-10-27T10:30:00-05:00"},
         "diagnosis": [{"condition": {"reference": "Condition/pama-cond-2"}, "rank": 1}]},
        {"resourceType": "Condition", "id": "pama-cond-2",
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                            "code": "confirmed"}]},
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                   "code": "encounter-diagnosis"}]}],
         "code": {"coding": [{"system": ICD10CM, "code": "M54.10", "display": "Radiculopathy, site unspecified"}]},
         "subject": subject, "encounter": {"reference": f"Encounter/{ENCOUNTER_ID}"}, "recordedDate": "2026-10-27"},
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
         "context": {"encounter": [{"reference": f"Encounter/{ENCOUNTER_ID}"}]},
         "content": [{"attachment": {"contentType": "text/plain", "data": _b64(
             "Denies trauma. Right C2 radiculopathy with suboccipital pain and occipital scalp numbness "
             "despite 12 weeks of physical therapy.")}}]},
    ]


def _searchset(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{FHIR_SERVER}/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in resources]}


def prefetch(encounters: bool = False) -> dict:
    """What the sandbox fetches for the service's prefetch templates (all but `encounter`); with
    `encounters`, the CDI review's (patient-view), which also searches the patient's Encounters."""
    by_type: dict[str, list] = {}
    for resource in record():
        by_type.setdefault(resource["resourceType"], []).append(resource)
    out = {"patient": by_type["Patient"][0], "conditions": _searchset(by_type["Condition"]),
           "procedures": _searchset(by_type["Procedure"]),
           "diagnosticReports": _searchset(by_type["DiagnosticReport"])}
    if encounters:
        out["encounters"] = _searchset(by_type["Encounter"])
    out["documentReferences"] = _searchset(by_type["DocumentReference"])
    return out


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


def medication_request(reason: dict | None) -> dict:
    """The Rx View / Rx Sign draft order as createFhirResource writes it for an R4 server (gabapentin,
    1 daily, the screens' defaults), with the chosen condition's `code` as `reasonCode` when given."""
    resource = {"resourceType": "MedicationRequest", "id": "request-123", "status": "draft", "intent": "order",
                "subject": {"reference": f"Patient/{PATIENT}"}, "authoredOn": "2026-10-27",
                "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                       "doseAndRate": [{"doseQuantity": {"value": 1, "system": UCUM,
                                                                         "code": "{pill}"}}]}],
                "dispenseRequest": {"expectedSupplyDuration": {"value": 1, "unit": "days", "system": UCUM,
                                                               "code": "d"}},
                "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                         "code": "community"}]},
                "medicationCodeableConcept": {"text": GABAPENTIN[1], "coding": [
                    {"display": GABAPENTIN[1], "system": RXNORM, "code": GABAPENTIN[0]}]}}
    if reason is not None:
        resource["reasonCode"] = reason  # one CodeableConcept, as the sandbox assigns it
    return resource


def _envelope(name: str, hook: str, context: dict, encounters: bool = False) -> dict:
    return {
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:spine-coding-cds:sandbox:{name}")),
        "hook": hook,
        "fhirServer": FHIR_SERVER,
        "context": {"patientId": PATIENT, "userId": USER, **context},
        "prefetch": prefetch(encounters),
    }


def order_select(name: str, orders: list[dict], selections: list[str]) -> dict:
    return _envelope(name, "order-select", {
        "selections": selections,
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]}})


def rx_view() -> dict:
    """Rx View: gabapentin selected for the patient's "Cervical radiculopathy" (its Condition's code)."""
    condition = next(r for r in record() if r["resourceType"] == "Condition" and r["id"] == "pama-cond-1")
    order = medication_request(condition["code"])
    return order_select("rx-view", [order], [f"MedicationRequest/{order['id']}"])


def rx_sign() -> dict:
    """Rx Sign: the same medication signed (no reason: the screen wires no "Treating" choice)."""
    return _envelope("rx-sign", "order-sign", {
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": medication_request(None)}]}})


def patient_view() -> dict:
    return _envelope("patient-view", "patient-view", {}, encounters=True)


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
        # Rx View: a medication selected (order-select): no card
        "order-select_rx-view_gabapentin.json": rx_view(),
        # Rx Sign: a medication signed (order-sign): no card
        "order-sign_rx-sign_gabapentin.json": rx_sign(),
        # Patient View (patient-view, the CDI review when enabled): the visit's M54.10 with a C2 root documented
        "patient-view_sandbox.json": patient_view(),
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
