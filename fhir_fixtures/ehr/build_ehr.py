"""Build the EHR-shaped fixtures of this folder: one chart as EHRs send it, and its text/plain twin.

    .venv/bin/python fhir_fixtures/ehr/build_ehr.py          # writes the *.json of this folder
    .venv/bin/python fhir_fixtures/ehr/build_ehr.py --check  # fails if a committed file differs

The chart: a woman of 58 with a grade I C1-on-C2 anterolisthesis (documented in the MRI report only)
and a right C2 radiculopathy (documented in the clinic note only), coded M43.10 and M54.10. Each
fixture is a full encounter-sign (or order-sign) hook request; the same chart in each, only the way
it is sent changes:

| file | codes | the note | the report |
|---|---|---|---|
| url-coded_text-plain (the twin) | ICD-10-CM URL, M43.10 | text/plain | text/plain |
| oid-coded_text-plain | OID, "M4310" / "m54.10", SNOMED CT beside (before one, after the other) | text/plain | text/plain |
| url-coded_rtf-note_pdf-report | ICD-10-CM URL | text/rtf | application/pdf (text layer, 2 pages) |
| as-ehrs-send-it | OID, SNOMED CT beside | text/html and text/rtf of the same note | application/pdf and text/plain; charset=windows-1252 of the same report |
| scanned-report | ICD-10-CM URL | text/plain | application/pdf, scanned (images only) |
| order-sign_url-coded / order-sign_oid-coded | as above, and the MRI order's reason M43.10 / OID "M4310" | text/plain | text/plain |

The PDFs and the RTF are written by documents.py (PDF syntax and RTF by hand: no library), base64
in the attachments as EHRs send them. Deterministic: building twice gives the same bytes.
"""
from __future__ import annotations

import base64
import copy
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import documents  # noqa: E402

ICD_URL = "http://hl7.org/fhir/sid/icd-10-cm"
ICD_OID = "urn:oid:2.16.840.1.113883.6.90"
SNOMED = "http://snomed.info/sct"
PATIENT, ENCOUNTER = "pt-ehr-1", "enc-ehr-1"

REPORT = """\
MRI CERVICAL SPINE WITHOUT CONTRAST

EXAM DATE: 11/02/2026 14:30
ORDERING PROVIDER: Spine Clinic

CLINICAL HISTORY: Suboccipital neck pain for 7 months, right occipital
radiation.

TECHNIQUE: Multiplanar multisequence MRI of the cervical spine without
contrast on a 1.5 T system.

COMPARISON: None.

FINDINGS:
Craniocervical junction: Grade I anterolisthesis of C1 on C2 measuring 3 mm,
  with degenerative changes of the lateral atlantoaxial joints. The dens is
  intact. No pannus.
C2-C3: No disc herniation. Patent canal and foramina.
C3-C4: Mild disc bulge. No stenosis.
C4-C5: Mild disc bulge. No stenosis.
C5-C6: Mild disc osteophyte complex with mild left foraminal narrowing.
C6-C7: No disc herniation.
C7-T1: Normal.
Cord: Normal signal and caliber. No cord compression.
Marrow: No fracture or marrow replacing lesion.
Soft tissues: Unremarkable.

IMPRESSION:
1. Degenerative grade I anterolisthesis of C1 on C2 (3 mm).
2. No fracture. No cord compression.
3. Mild C5-C6 spondylosis without canal stenosis.

Electronically signed by the attending radiologist on 11/02/2026 16:05.
"""

NOTE = """\
SPINE CLINIC PROGRESS NOTE
Date of service: 11/20/2026. Seen with her husband, René.

CHIEF COMPLAINT: Suboccipital neck pain, worse on the right.

HPI: 58-year-old woman with 7 months of suboccipital pain radiating over the
right posterior scalp, pain ≥ 6/10 at night, with numbness behind the right
ear. Denies trauma. No history of congenital spine anomaly. Completed 12 weeks
of physical therapy without relief.

EXAM: Decreased light touch sensation in the right C2 dermatome. Strength 5/5
in all four limbs. Reflexes symmetric. Hoffmann negative. Gait normal.

ASSESSMENT:
1. Degenerative spondylolisthesis of the upper cervical spine, see MRI.
2. Right C2 radiculopathy.

PLAN: Flexion-extension radiographs. Discussed C1-C2 fusion versus continued
conservative care; she will consider. Return in 4 weeks.
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrapped_b64(data: bytes) -> str:
    """Base64 in 76-character lines, as several EHRs send it (MIME style)."""
    text = b64(data)
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def condition(cid: str, codings: list[dict], text: str) -> dict:
    return {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
        "code": {"coding": codings, "text": text},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "encounter": {"reference": f"Encounter/{ENCOUNTER}"},
        "recordedDate": "2026-11-20",
    }


def conditions(oid: bool) -> list[dict]:
    if not oid:
        return [condition("cond-slip", [{"system": ICD_URL, "code": "M43.10",
                                         "display": "Spondylolisthesis, site unspecified"}], "Spondylolisthesis"),
                condition("cond-radic", [{"system": ICD_URL, "code": "M54.10",
                                          "display": "Radiculopathy, site unspecified"}], "Radiculopathy")]
    # As EHRs send them: the OID, no dot, lower case; SNOMED CT beside, first in one, second in the other.
    return [condition("cond-slip", [{"system": SNOMED, "code": "274152003", "display": "Spondylolisthesis"},
                                    {"system": ICD_OID, "code": "M4310",
                                     "display": "Spondylolisthesis, site unspecified"}], "Spondylolisthesis"),
            condition("cond-radic", [{"system": ICD_OID, "code": "m54.10", "display": "Radiculopathy, site unspecified"},
                                     {"system": SNOMED, "code": "11049006", "display": "Radiculopathy"}],
                      "Radiculopathy")]


def report(presented_form: list[dict]) -> dict:
    return {
        "resourceType": "DiagnosticReport", "id": "dr-mri-ehr", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "30667-0",
                             "display": "MR Cervical spine WO contrast"}], "text": "MRI cervical spine"},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": "2026-11-02T14:30:00-05:00",
        "issued": "2026-11-02T16:05:00-05:00",
        "presentedForm": presented_form,
    }


def note(contents: list[dict]) -> dict:
    return {
        "resourceType": "DocumentReference", "id": "doc-note-ehr", "status": "current", "docStatus": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "date": "2026-11-20T10:15:00-05:00",
        "content": [{"attachment": a} for a in contents],
        "context": {"encounter": [{"reference": f"Encounter/{ENCOUNTER}"}]},
    }


def plain(text: str, charset: str = "utf-8") -> dict:
    return {"contentType": f"text/plain; charset={charset}", "data": b64(text.encode(charset))}


def html(text: str) -> dict:
    paragraphs = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>" for p in text.strip().split("\n\n"))
    markup = f"<html><head><title>Progress note</title></head><body>{paragraphs}</body></html>"
    return {"contentType": "text/html; charset=utf-8", "data": b64(markup.encode("utf-8"))}


def rtf(text: str) -> dict:
    return {"contentType": "text/rtf", "data": wrapped_b64(documents.rtf(text)), "title": "Progress note.rtf"}


def pdf(text: str) -> dict:
    data = documents.text_pdf(documents.paginate(text, 30), title="MRI cervical spine")
    return {"contentType": "application/pdf", "data": wrapped_b64(data), "title": "MRI report.pdf"}


def scanned() -> dict:
    return {"contentType": "application/pdf", "data": wrapped_b64(documents.scanned_pdf(2)), "title": "Scan.pdf"}


def bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                      for r in resources]}


ENCOUNTER_RESOURCE = {
    "resourceType": "Encounter", "id": ENCOUNTER, "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
    "subject": {"reference": f"Patient/{PATIENT}"},
    "period": {"start": "2026-11-20T09:00:00-05:00"},
    "diagnosis": [{"condition": {"reference": "Condition/cond-slip"}, "rank": 1},
                  {"condition": {"reference": "Condition/cond-radic"}, "rank": 2}],
}
PATIENT_RESOURCE = {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1968-02-11"}
THERAPY = {"resourceType": "Procedure", "id": "proc-pt-ehr", "status": "completed",
           "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110",
                                "display": "Therapeutic exercises"}], "text": "Physical therapy"},
           "subject": {"reference": f"Patient/{PATIENT}"},
           "performedPeriod": {"start": "2026-07-01", "end": "2026-09-30"}}


def hook_request(name: str, *, oid: bool, note_contents: list[dict], report_forms: list[dict],
                 order_sign: bool = False) -> dict:
    body = {
        "hookInstance": f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
        "hook": "order-sign" if order_sign else "encounter-sign",
        "context": {"userId": "PractitionerRole/role-ehr", "patientId": PATIENT, "encounterId": ENCOUNTER},
        "prefetch": {
            "patient": PATIENT_RESOURCE,
            "encounter": ENCOUNTER_RESOURCE,
            "conditions": bundle(conditions(oid)),
            "procedures": bundle([THERAPY]),
            "diagnosticReports": bundle([report(report_forms)]),
            "documentReferences": bundle([note(note_contents)]),
        },
    }
    if order_sign:
        reason = ({"system": ICD_OID, "code": "M4310"} if oid else
                  {"system": ICD_URL, "code": "M43.10", "display": "Spondylolisthesis, site unspecified"})
        order = {"resourceType": "ServiceRequest", "id": "sr-ct-ehr", "status": "draft", "intent": "order",
                 "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72125",
                                      "display": "CT cervical spine without contrast"}]},
                 "subject": {"reference": f"Patient/{PATIENT}"},
                 "reasonCode": [{"coding": [reason], "text": "Spondylolisthesis"}]}
        body["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                          "entry": [{"resource": order}]}
    return body


def fixtures() -> dict[str, dict]:
    stable = lambda name, **kw: (name, hook_request(name, **kw))  # noqa: E731
    out = dict([
        stable("url-coded_text-plain", oid=False, note_contents=[plain(NOTE)], report_forms=[plain(REPORT)]),
        stable("oid-coded_text-plain", oid=True, note_contents=[plain(NOTE)], report_forms=[plain(REPORT)]),
        stable("url-coded_rtf-note_pdf-report", oid=False, note_contents=[rtf(NOTE)], report_forms=[pdf(REPORT)]),
        stable("as-ehrs-send-it", oid=True, note_contents=[rtf(NOTE), html(NOTE)],
               report_forms=[pdf(REPORT), plain(REPORT, "windows-1252")]),
        stable("scanned-report", oid=False, note_contents=[plain(NOTE)], report_forms=[scanned()]),
        stable("order-sign_url-coded", oid=False, note_contents=[plain(NOTE)], report_forms=[plain(REPORT)],
               order_sign=True),
        stable("order-sign_oid-coded", oid=True, note_contents=[plain(NOTE)], report_forms=[plain(REPORT)],
               order_sign=True),
    ])
    for n, body in enumerate(out.values()):  # hash() varies by process: fixed instances instead
        body["hookInstance"] = f"6f1c2a9e-0b7d-4c1e-9a3f-{n:012d}"
    return copy.deepcopy(out)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, body in fixtures().items():
        path = HERE / f"{name}.json"
        text = json.dumps(body, indent=1, ensure_ascii=False) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run fhir_fixtures/ehr/build_ehr.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
