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
