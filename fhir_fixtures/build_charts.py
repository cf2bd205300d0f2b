"""The chart corpus: full-length charts as EHRs send them, each with the cards a coder expects.

`fhir_fixtures/charts/*.toml` holds one chart a file: the record (conditions, reports with their
full text, notes with their status, date and encounter, procedures, draft orders) and `expect`,
every card the service must answer (`expect = []`: the chart must stay silent). Unlike the
vignettes (one-line texts, one rule each) these are the documents a coder meets: radiology
reports in EXAM / HISTORY / TECHNIQUE / COMPARISON / FINDINGS-by-level / IMPRESSION form, visit
notes with templated ROS and PMH/PSH/FH/SH, consults, discharge summaries; hard-wrapped lines,
abbreviations, misspellings. `classes` names the reading problems a chart exercises (CLASSES).

This module turns a chart into a CDS Hooks request; tests/test_charts.py compares the answer card
for card, and `make accuracy` (bench/accuracy.py) prints the per-rule scorecard.
Check one file: .venv/bin/python fhir_fixtures/build_charts.py fhir_fixtures/charts/<id>.toml
"""
from __future__ import annotations

import base64
import importlib.util
import json
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHARTS = HERE / "charts"

_spec = importlib.util.spec_from_file_location("build_vignettes", HERE / "build_vignettes.py")
vignettes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vignettes)

PATIENT, ENCOUNTER, PRIOR_ENCOUNTER = vignettes.PATIENT, vignettes.ENCOUNTER, "ve-prior"
CLASSES = {
    "hard-wrap": "EHR text wrapped at about 80 characters: a line break is not a sentence end",
    "report-structure": "radiology findings listed by level: a level line is about that level only",
    "sections": "what a sentence means depends on its section (FH, PMH/PSH, plan, differential, indication, comparison, ROS)",
    "which-text": "status, authorship (code.text), supersession and encounter decide which text is evidence",
    "modifiers": "acute/chronic/sequela, traumatic, congenital/acquired belong to the finding they modify",
    "words": "misspellings, abbreviations and radiologists' synonyms",
    "rule": "a rule's firing or its near miss on a full-length chart",
}
NOTE_TYPES = {  # LOINC document types
    "progress": ("11506-3", "Progress note"),
    "consult": ("11488-4", "Consult note"),
    "history-physical": ("34117-2", "History and physical note"),
    "discharge": ("18842-5", "Discharge summary"),
    "ed": ("34111-5", "Emergency department note"),
    "operative": ("11504-8", "Surgical operation note"),
    "pain": ("11506-3", "Progress note"),
}
ENCOUNTER_CLASSES = {"AMB": "ambulatory", "IMP": "inpatient encounter", "EMER": "emergency",
                     "OBSENC": "observation encounter", "E": "Emergency"}
_CHART_KEYS = {"id", "about", "classes", "hook", "encounter_class", "conditions", "reports", "notes",
               "procedures", "orders", "ranks", "expect"}
_NOTE_KEYS = {"text", "kind", "status", "doc_status", "date", "encounter", "replaces", "html", "author"}
_REPORT_KEYS = {"study", "status", "date", "conclusion", "text", "html"}


class ChartError(ValueError):
    pass


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _note(n: int, spec: dict) -> dict:
    unknown = set(spec) - _NOTE_KEYS
    if unknown:
        raise ChartError(f"note {n}: unknown keys {sorted(unknown)}")
    loinc, name = NOTE_TYPES[spec.get("kind", "progress")]
    html = spec.get("html", False)
    resource = {
        "resourceType": "DocumentReference", "id": f"note-{n}", "status": spec.get("status", "current"),
        "type": {"coding": [{"system": vignettes.LOINC, "code": loinc, "display": name}], "text": name},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "date": spec.get("date", "2026-11-20T10:15:00-05:00"),
        "content": [{"attachment": {"contentType": "text/html" if html else "text/plain; charset=utf-8",
                                    "data": _b64(spec["text"])}}],
        "context": {"encounter": [{"reference": "Encounter/" + (PRIOR_ENCOUNTER if spec.get("encounter") == "prior"
                                                                else ENCOUNTER)}]},
    }
    if spec.get("doc_status"):
        resource["docStatus"] = spec["doc_status"]
    if spec.get("author"):
        resource["author"] = [{"reference": spec["author"]}]
    if spec.get("replaces"):
        resource["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/note-{spec['replaces']}"}}]
    return resource


def _report(n: int, spec: dict) -> dict:
    unknown = set(spec) - _REPORT_KEYS
    if unknown:
        raise ChartError(f"report {n}: unknown keys {sorted(unknown)}")
    resource = vignettes._report(n, {k: v for k, v in spec.items() if k != "html"})
    if spec.get("html") and spec.get("text"):
        resource["presentedForm"] = [{"contentType": "text/html", "data": _b64(spec["text"])}]
    return resource


def build(chart: dict) -> dict:
    """The chart as a CDS Hooks request (the vignettes' builder, with full notes)."""
    unknown = set(chart) - _CHART_KEYS
    if unknown:
        raise ChartError(f"{chart.get('id')}: unknown keys {sorted(unknown)}")
    for name in chart.get("classes", []):
        if name not in CLASSES:
            raise ChartError(f"{chart['id']}: unknown class {name!r} (one of {sorted(CLASSES)})")
    request = vignettes.build({**chart, "notes": []})
    prefetch = request["prefetch"]
    conditions = prefetch["conditions"]["entry"]
    for entry, spec in zip(conditions, chart.get("conditions", [])):
        if spec.get("encounter") == "prior":
            entry["resource"]["encounter"] = {"reference": f"Encounter/{PRIOR_ENCOUNTER}"}
    prefetch["diagnosticReports"] = vignettes._searchset(
        [_report(n + 1, r) for n, r in enumerate(chart.get("reports", []))])
    notes = [_note(n + 1, spec if isinstance(spec, dict) else {"text": spec})
             for n, spec in enumerate(chart.get("notes", []))]
    prefetch["documentReferences"] = vignettes._searchset(notes)
    klass = chart.get("encounter_class", "AMB")
    prefetch["encounter"]["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass,
                                      "display": ENCOUNTER_CLASSES[klass]}
    request["hookInstance"] = vignettes._uuid("chart:" + chart["id"])
    return request


def load(path: Path) -> dict:
    with open(path, "rb") as fh:
        chart = tomllib.load(fh)
    if chart.get("id") != path.stem:
        raise ChartError(f"{path.name}: id must be the file name ({path.stem})")
    if "expect" not in chart or not chart.get("about"):
        raise ChartError(f"{path.name}: needs `about` and `expect`")
    build(chart)
    return chart


def load_all() -> list[dict]:
    return [load(p) for p in sorted(CHARTS.glob("*.toml"))]


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(CHARTS.glob("*.toml"))
    for path in paths:
        chart = load(path)
        print(json.dumps(build(chart), indent=2) if len(paths) == 1 else f"ok {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
