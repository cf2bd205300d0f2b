"""Issue 15 as a coder checks it: the care setting's convention for uncertain diagnoses, the
acuity and cause of the slip and the root, the current-injury Excludes1, code-first only with a
cause, SNOMED CT-only Conditions. The rules' firing and near misses are in the vignettes and the
chart corpus; here, the parts underneath and what the cards say."""
from __future__ import annotations

import copy
from datetime import date

import pytest
from fhir.resources.R4B.encounter import Encounter

from service.care_setting import CARE_SETTINGS, CareSettings
from service.config import Settings
from service.nlp.concepts import LexiconError
from service.nlp.reader import Source, TextReader
from service.pipeline import Call, answer_hook
from service.runtime import build_runtime
from service.services import SERVICES

from .support import FIXTURES

import importlib.util

_spec = importlib.util.spec_from_file_location("build_vignettes", FIXTURES / "build_vignettes.py")
build_vignettes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_vignettes)

READER = TextReader()
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def _encounter(example: dict):
    if example.get("no_encounter"):
        return None
    resource = {"resourceType": "Encounter", "id": "e1", "status": "finished",
                "class": {"system": V3, "code": example["class"]} if "class" in example
                else {"system": "urn:ehr:visit-class", "code": "X9", "display": example["class_display"]}
                if "class_display" in example else {"system": V3, "code": "UNKNOWNX"}}
    if "type_text" in example:
        resource["type"] = [{"text": example["type_text"]}]
    return Encounter.model_validate(resource)


@pytest.mark.parametrize("example", CARE_SETTINGS.examples, ids=lambda e: str(e))
def test_every_setting_example(example):
    setting = CARE_SETTINGS.of(_encounter(example), example.get("hook", "encounter-sign"))
    assert setting.name == example["setting"]


def test_the_conventions_follow_the_guidelines():
    inpatient = CARE_SETTINGS.of(_encounter({"class": "IMP"}), "encounter-discharge")
    assert inpatient.codes_uncertain and "II.H" in inpatient.guideline and "III.C" in inpatient.guideline
    for klass in ("AMB", "EMER", "OBSENC"):  # observation stays are outpatient services (IV.A.2)
        setting = CARE_SETTINGS.of(_encounter({"class": klass}), "encounter-discharge")
        assert not setting.codes_uncertain and "IV.H" in setting.guideline, klass
    assert CARE_SETTINGS.of(None, "encounter-discharge").convention == "outpatient"  # no Encounter


@pytest.mark.parametrize("old, new, message", [
    ('convention = "inpatient"\nclasses', 'convention = "sometimes"\nclasses', "convention"),
    ('classes = ["EMER", "E"]', 'classes = ["IMP"]', "listed twice"),
    ('default = "ambulatory"', 'default = "nowhere"', "not a setting"),
    ("codes_uncertain = true", 'codes_uncertain = "yes"', "conventions.inpatient"),
    ('diagnoses = ["radiculopathy",', 'diagnoses = ["not-a-finding",', "diagnoses not in concepts.toml"),
    ('type_words = ["emergency"]', 'type_words = ["emergency department"]', "one lower-case word"),
])
def test_a_malformed_settings_file_is_refused_naming_the_entry(tmp_path, old, new, message):
    from service.care_setting import PATH

    text = PATH.read_text()
    assert old in text
    path = tmp_path / "care_settings.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(LexiconError, match=message):
        CareSettings(path)


# ------------------------------------------------------------------ the reading
def _read(text: str, report: bool = False):
    return READER.read(Source("DiagnosticReport/r" if report else "DocumentReference/n", "text", text, None, report))


@pytest.mark.parametrize("text", ["Likely right C2 radiculopathy.", "Probable C2 radiculopathy.",
                                  "Suspected right C2 radiculopathy.", "Right C2 radiculopathy, still to be ruled out.",
                                  "Possible C2 radiculopathy.", "Questionable C2 radiculopathy."])
def test_the_guidelines_uncertainty_terms_are_hedged(text):
    [finding] = [f for f in _read(text) if f.kind == "radiculopathy"]
    assert finding.assertion == "uncertain" and finding.hedged


@pytest.mark.parametrize("text", ["Rule out right C2 radiculopathy.", "EMG to evaluate for C2 radiculopathy.",
                                  "Cannot exclude C2 radiculopathy.", "C2 radiculopathy?",
                                  "Differential diagnosis: C2 radiculopathy versus occipital neuralgia."])
def test_workup_wording_is_uncertain_but_never_hedged(text):
    found = [f for f in _read(text) if f.kind == "radiculopathy"]
    assert found and all(f.assertion == "uncertain" and not f.hedged for f in found), found


# ------------------------------------------------------------------ the cards
@pytest.fixture(scope="module")
def runtime():
    return build_runtime(Settings.from_env(overrides={"log_level": "ERROR"}), store=None)


def _answer(runtime, vignette: dict) -> list[dict]:
    body = build_vignettes.build({"id": "t", **vignette})
    service = next(s for s in SERVICES.values() if s.hook == body["hook"])
    return answer_hook(runtime, service, body, Call("http://localhost/", origin=None, screen=False,
                                                    as_of=date(2026, 6, 1))).cards


LIKELY = {"conditions": [{"code": "M54.10"}],
          "notes": ["Discharge diagnoses: likely right C2 radiculopathy, with right occipital scalp numbness."]}


def test_the_same_chart_is_coded_at_an_inpatient_discharge_and_asked_about_at_an_outpatient_visit(runtime):
    [inpatient] = _answer(runtime, {**LIKELY, "hook": "encounter-discharge", "encounter_class": "IMP"})
    payload = inpatient["extension"]["spine-coding-cds"]
    assert (payload["rule"], payload["proposedCodes"]) == ("RAD-SPECIFICITY", ["M54.11"])
    assert "Care setting: inpatient admission" in inpatient["detail"] and "Section II.H" in inpatient["detail"]
    assert payload["evidence"][0]["assertion"] == "uncertain"
    assert inpatient["suggestions"][0]["actions"][0]["resource"]["code"]["coding"][0]["code"] == "M54.11"

    [outpatient] = _answer(runtime, {**LIKELY, "hook": "encounter-sign", "encounter_class": "AMB"})
    payload = outpatient["extension"]["spine-coding-cds"]
    assert (payload["rule"], payload["proposedCodes"], payload["missingDocumentation"]) == \
        ("DOC-UNCERTAIN", [], ["diagnosis-certainty"])
    assert outpatient["indicator"] == "info"
    assert "Section IV.H" in outpatient["detail"] and "M54.11" in outpatient["detail"]
    # a compliant query: its answers set no code
    assert outpatient["suggestions"] and all("actions" not in s for s in outpatient["suggestions"])


def test_a_certain_diagnosis_needs_no_convention(runtime):
    certain = {"conditions": [{"code": "M54.10"}], "notes": ["Right C2 radiculopathy, right occipital scalp numbness."]}
    for klass, hook in (("IMP", "encounter-discharge"), ("AMB", "encounter-sign")):
        [card] = _answer(runtime, {**certain, "hook": hook, "encounter_class": klass})
        assert card["extension"]["spine-coding-cds"]["rule"] == "RAD-SPECIFICITY"
        assert "Care setting" not in card["detail"]


def test_a_snomed_only_condition_gets_its_twins_card_and_keeps_its_snomed_coding(runtime):
    vignette = {"conditions": [{"code": "274152003", "system": "snomed", "display": "Spondylolisthesis"}],
                "reports": [{"study": "mri-cervical", "conclusion": "Degenerative grade I anterolisthesis of C1 on C2."}],
                "notes": ["Denies trauma. Degenerative C1-C2 spondylolisthesis."]}
    [card] = _answer(runtime, vignette)
    payload = card["extension"]["spine-coding-cds"]
    assert (payload["rule"], payload["currentCodes"], payload["proposedCodes"]) == \
        ("SPL-SPECIFICITY", ["M43.10"], ["M43.11"])
    assert "coded in SNOMED CT only (274152003 Spondylolisthesis)" in " ".join(card["detail"].split())
    [action] = card["suggestions"][0]["actions"]
    codings = action["resource"]["code"]["coding"]
    assert codings[0]["system"] == ICD10CM and codings[0]["code"] == "M43.11"
    assert {"system": SNOMED, "code": "274152003", "display": "Spondylolisthesis"} in codings


def test_a_snomed_concept_not_in_the_map_is_not_guessed(runtime):
    vignette = {"conditions": [{"code": "445281000124101", "system": "snomed", "display": "Spondylolisthesis of C1"}],
                "notes": ["Degenerative grade I anterolisthesis of C1 on C2. Denies trauma."]}
    assert _answer(runtime, vignette) == []


def test_a_radiculopathy_from_a_current_injury_takes_the_injury_code_with_its_seventh_character(runtime):
    base = {"encounter_class": "EMER", "conditions": [{"code": "M54.11"}],
            "notes": ["MVC today. Left C2 radiculopathy due to the displaced C1 arch fracture fragment impinging the "
                      "left C2 root."]}
    [card] = _answer(runtime, base)
    payload = card["extension"]["spine-coding-cds"]
    assert (payload["rule"], payload["proposedCodes"]) == ("RAD-INJURY", ["S14.2XXA"])
    assert card["indicator"] == "warning" and "current injury" in card["detail"]
    follow_up = copy.deepcopy(base)
    follow_up["notes"] = ["Left C2 radiculopathy due to the C1 arch fracture fragment impinging the left C2 root, "
                          "subsequent encounter, routine healing."]
    [card] = _answer(runtime, follow_up)
    assert card["extension"]["spine-coding-cds"]["proposedCodes"] == ["S14.2XXD"]


def test_a_current_injury_of_an_unstated_root_asks_for_the_level(runtime):
    vignette = {"encounter_class": "EMER", "conditions": [{"code": "M54.10"}],
                "notes": ["MVC today. Radiculopathy due to the displaced fracture fragment."]}
    cards = [c["extension"]["spine-coding-cds"] for c in _answer(runtime, vignette)]
    assert {"rule": "RAD-INJURY", "missingDocumentation": ["region"]}.items() <= next(
        c for c in cards if c["rule"] == "RAD-INJURY").items()


def test_the_encounter_type_reaches_the_setting_through_the_record(runtime):
    """An Encounter whose class the map does not know (another EHR's code) names its setting by its
    type: the record keeps Encounter.type for it."""
    body = build_vignettes.build({"id": "t", "hook": "encounter-sign", **LIKELY})
    body["prefetch"]["encounter"]["class"] = {"system": "urn:ehr:visit-class", "code": "X9"}
    body["prefetch"]["encounter"]["type"] = [{"text": "Inpatient admission"}]
    service = SERVICES["spine-coding-encounter-sign"]
    [card] = answer_hook(runtime, service, body, Call("http://localhost/", origin=None, screen=False,
                                                      as_of=date(2026, 6, 1))).cards
    assert card["extension"]["spine-coding-cds"]["rule"] == "RAD-SPECIFICITY"
    assert "Encounter.type" in card["detail"]
    body["prefetch"]["encounter"]["type"] = [{"text": "Pre-admission testing"}]
    [card] = answer_hook(runtime, service, body, Call("http://localhost/", origin=None, screen=False,
                                                      as_of=date(2026, 6, 1))).cards
    assert card["extension"]["spine-coding-cds"]["rule"] == "DOC-UNCERTAIN"
