"""The batch audit over FHIR Bundles and Bulk Data NDJSON: same rules, per patient and encounter."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter

import pytest

from service.audit import audit_patient, index, read_resources

from .support import FIXTURES, ROOT

FIRES = ["spl-trauma-fires-nondisplaced-type-ii-dens", "rad-cervicalgia-fires", "spl-specificity-fires-m43.10-c1-on-c2"]
SILENT = ["well-documented-record-is-silent", "spl-docs-silent-complete"]


def _resources(vignette: str, patient: str, encounter: str) -> list[dict]:
    """A vignette's record as one patient's export (its ids renamed to the patient)."""
    body = json.loads((FIXTURES / "vignettes" / f"{vignette}.json").read_text())
    text = json.dumps(body["prefetch"]).replace("vp-1", patient).replace("ve-1", encounter)
    prefetch = json.loads(text)
    out = [prefetch["patient"], prefetch["encounter"]]
    for value in prefetch.values():
        if value and value.get("resourceType") == "Bundle":
            out += [e["resource"] for e in value["entry"]]
    for r in out:
        if r.get("id") and r["resourceType"] not in ("Patient", "Encounter"):
            r["id"] = f"{patient}-{r['id']}"
    return out


@pytest.fixture
def export(tmp_path):
    """A Bulk Data export: one NDJSON file per resource type, patients interleaved."""
    by_type: dict[str, list[str]] = {}
    for n, vignette in enumerate(FIRES + SILENT):
        for resource in _resources(vignette, f"p{n}", f"e{n}"):
            by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    folder = tmp_path / "export"
    folder.mkdir()
    for kind, lines in by_type.items():
        (folder / f"{kind}.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def test_the_index_holds_offsets_and_reads_each_patient_back(export):
    patients, count = index(export)
    assert sorted(patients) == [f"p{n}" for n in range(5)] and count > 20
    resources = read_resources(patients["p0"])
    assert {r["resourceType"] for r in resources} >= {"Patient", "Condition", "DiagnosticReport"}
    assert all(r.get("id") == "p0" or r["id"].startswith("p0-") or r["resourceType"] == "Encounter"
               for r in resources)


def test_audit_patient_gives_the_vignettes_cards():
    rows = audit_patient(_resources(FIRES[0], "px", "ex"))
    assert [(r["rule"], r["proposed_codes"], r["encounter"]) for r in rows] == [("SPL-TRAUMA", "S12.112A", "ex")]
    assert audit_patient(_resources(SILENT[0], "py", "ey")) == []


def test_the_command_writes_csv_and_html_with_progress(export, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "service.cli", "audit", str(export), "--out", str(out),
                             "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["patients"] == 5 and summary["workers"] == 2
    assert "audit: patients 5/5 (100 %)" in result.stderr
    rows = list(csv.DictReader(open(out / "audit.csv")))
    assert Counter(r["rule"] for r in rows) == Counter({"SPL-TRAUMA": 1, "RAD-CERVICALGIA": 1, "SPL-SPECIFICITY": 1})
    assert {r["patient"] for r in rows} == {"p0", "p1", "p2"}
    page = (out / "audit.html").read_text()
    assert "SPL-TRAUMA" in page and "Acute nondisplaced type II dens fracture." in page


def test_bundles_are_read_too(tmp_path):
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": r} for r in _resources(FIRES[1], "pb", "eb")]}
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    patients, _ = index(tmp_path / "b.json")
    rows = audit_patient(read_resources(patients["pb"]))
    assert [r["rule"] for r in rows] == ["RAD-CERVICALGIA"]


def test_a_missing_path_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "service.cli", "audit", str(tmp_path / "nope")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no such file" in result.stderr


def _broken_export(tmp_path):
    """Three patients: p0 fires, p1 has a malformed DocumentReference (context a string, which the
    encounter split could not read), p2 is silent; plus a line that is not JSON."""
    lines = []
    for n, vignette in enumerate([FIRES[0], SILENT[0], SILENT[1]]):
        for resource in _resources(vignette, f"p{n}", f"e{n}"):
            if n == 1 and resource["resourceType"] == "DocumentReference":
                resource["context"] = "not an object"
            lines.append(json.dumps(resource))
    lines.insert(3, '{"resourceType": "Condition", "subject": ')  # cut off mid-line
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "all.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def test_a_patient_that_cannot_be_read_is_reported_and_the_audit_goes_on(tmp_path):
    from service.audit import run

    folder = _broken_export(tmp_path)
    with pytest.raises(AttributeError):  # what stopped the whole audit before
        audit_patient(read_resources(index(folder)[0]["p1"]))
    out = tmp_path / "out"
    summary = run(folder, out, workers=1, progress=None)
    assert summary["patients"] == 3 and summary["unreadable"] == 2
    assert summary["unreadable_patients"] == [
        {"patient": "all.ndjson:4", "stage": "reading", "error": "unparseable line"},
        {"patient": "p1", "stage": "evaluating", "error": "AttributeError"}]
    rows = list(csv.DictReader(open(out / "audit.csv")))
    assert [(r["patient"], r["rule"]) for r in rows] == [("p0", "SPL-TRAUMA")]  # p2 after p1 was still read
    page = (out / "audit.html").read_text()
    assert "2 not read" in page and "<td>p1</td><td>evaluating</td><td>AttributeError</td>" in page
    assert "not an object" not in page  # the error's type, never the chart's content


def test_a_note_that_breaks_the_reader_skips_only_its_patient(tmp_path, monkeypatch):
    """Whatever the reader raises on (it is built not to), that patient is reported and the others read."""
    import base64

    import service.record
    from service.audit import run

    decode = service.record.decode_text

    def breaks_on_marker(content_type, data, deadline=None):
        if b"BREAKS-THE-READER" in data:
            raise UnicodeError("reader broke")
        return decode(content_type, data, deadline)

    resources = _resources(FIRES[0], "p0", "e0") + _resources(FIRES[1], "p1", "e1")
    resources.append({"resourceType": "DocumentReference", "id": "p1-bad-note", "status": "current",
                      "subject": {"reference": "Patient/p1"},
                      "content": [{"attachment": {"contentType": "text/html",
                                                  "data": base64.b64encode(b"<p>BREAKS-THE-READER</p>").decode()}}]})
    export = tmp_path / "export"
    export.mkdir()
    (export / "all.ndjson").write_text("\n".join(json.dumps(r) for r in resources) + "\n")
    monkeypatch.setattr(service.record, "decode_text", breaks_on_marker)  # the fork pool's worker inherits it
    out = tmp_path / "out"
    summary = run(export, out, workers=1, progress=None)
    assert summary["patients"] == 2
    assert summary["unreadable_patients"] == [{"patient": "p1", "stage": "evaluating", "error": "UnicodeError"}]
    rows = list(csv.DictReader(open(out / "audit.csv")))
    assert [(r["patient"], r["rule"]) for r in rows] == [("p0", "SPL-TRAUMA")]
    assert "reader broke" not in (out / "audit.html").read_text()
