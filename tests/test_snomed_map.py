"""knowledge/snomed_map.toml: every entry by its example (an order's reason in SNOMED CT read as the
condition it names), its target against the tabular, and the schema checked at load."""
from __future__ import annotations

import copy

import pytest

from service.nlp.concepts import LexiconError
from service.record import read_snomed_reasons
from service.rules.common import region_of_code
from service.snomed import PATH, SNOMED, SNOMED_MAP, SnomedMap, is_concept_id, verhoeff_valid
from service.terminology import ICD10CM, Terminology
from service.valuesets import ValueSets

TERMINOLOGY = Terminology()
ENTRIES = sorted(SNOMED_MAP.concepts.values(), key=lambda c: c.sctid)


def _order(*codings) -> dict:
    return {"resourceType": "ServiceRequest", "id": "o1", "status": "draft", "intent": "plan",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72141"}]},
            "reasonCode": [{"coding": list(codings)}]}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.sctid for e in ENTRIES])
def test_an_order_reason_with_the_code_is_read_as_the_mapped_condition(entry):
    """The entry's example: reasonCode [{system SNOMED CT, code}] (no display, as the sandbox sends it)."""
    order = _order({"system": SNOMED, "code": entry.sctid})
    readable, read = read_snomed_reasons(order)
    assert [(r.index, r.concept, r.code) for r in read] == [(0, entry, entry.icd10cm)]
    assert readable["reasonCode"][0]["coding"] == [{"system": SNOMED, "code": entry.sctid},
                                                   {"system": ICD10CM, "code": entry.icd10cm}]
    assert order["reasonCode"][0]["coding"] == [{"system": SNOMED, "code": entry.sctid}]  # the EHR's JSON as sent


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.sctid for e in ENTRIES])
def test_the_target_is_billable_and_names_the_region_the_concept_names(entry):
    assert TERMINOLOGY.is_billable(entry.icd10cm), entry.icd10cm
    assert is_concept_id(entry.sctid)
    if entry.icd10cm[:5] in ("M43.1", "M54.1"):  # the families whose 5th character is the region
        assert region_of_code(entry.icd10cm) == entry.region, (entry.sctid, entry.icd10cm, entry.region)
    assert entry.fsn.startswith(entry.term.rsplit(" (", 1)[0])


def test_the_concepts_the_value_sets_also_read_stand_for_the_same_finding():
    """valuesets.toml [snomed_findings] reads SNOMED CT Conditions: the two lists agree where they overlap."""
    findings = ValueSets().snomed_findings
    overlap = [e for e in ENTRIES if e.sctid in findings]
    assert overlap  # 11049006, 82473003, 81680005, 69896004
    for entry in overlap:
        assert findings[entry.sctid] == entry.finding, entry.sctid


def test_the_pama_screens_reasons_are_listed():
    """The SNOMED CT reasons the issue quotes from the sandbox's PAMA screen, where an id could be sourced."""
    assert SNOMED_MAP.get(SNOMED, "54404000").fsn == "Cervical radiculopathy (disorder)"
    assert SNOMED_MAP.get(SNOMED, "274152003").fsn == "Spondylolisthesis (disorder)"
    assert SNOMED_MAP.get(SNOMED, "54404000").icd10cm == "M54.12"  # the cervical region, not C0-C2
    assert SNOMED_MAP.get(SNOMED, "128196005") is None  # printed as Lumbar radiculopathy by VSAC


@pytest.mark.parametrize("codings", [
    [{"system": SNOMED, "display": "Cervical radiculopathy (disorder)"}],                 # a display, no code
    [{"system": "http://snomed.info/sct/", "code": "54404000"}],                          # another system
    [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "54404000"}],                   # SNOMED's OID: not read
    [{"system": SNOMED, "code": " 54404000"}],                                            # not the code as listed
    [{"system": SNOMED, "code": "279039007", "display": "Cervical radiculopathy"}],      # not listed, whatever it says
    [{"system": SNOMED, "code": "54404000"}, {"system": ICD10CM, "code": "M54.12"}],     # ICD-10-CM beside: read by it
    [{"system": SNOMED, "code": "54404000"}, {"system": SNOMED, "code": "274152003"}],   # two readings: none
], ids=["display-only", "trailing-slash", "oid", "padded", "not-listed", "with-icd", "ambiguous"])
def test_nothing_is_guessed(codings):
    readable, read = read_snomed_reasons(_order(*copy.deepcopy(codings)))
    assert read == ()
    assert readable["reasonCode"][0]["coding"] == codings


def test_the_check_digit_refuses_a_mistyped_id():
    assert verhoeff_valid("54404000") and not verhoeff_valid("54404001") and not verhoeff_valid("45404000")
    assert not is_concept_id("54404100")  # a description's partition (01), not a concept's


def _written(tmp_path, text: str):
    path = tmp_path / "snomed_map.toml"
    path.write_text(text)
    return path


ENTRY = '''
[[concept]]
sctid = "54404000"
fsn = "Cervical radiculopathy (disorder)"
term = "Cervical radiculopathy"
finding = "radiculopathy"
region = "cervical"
icd10cm = "M54.12"
source = "a source"
target = "a reason"
'''


@pytest.mark.parametrize("change, message", [
    (('sctid = "54404000"', 'sctid = "54404001"'), "not a SNOMED CT concept id"),
    (('finding = "radiculopathy"', 'finding = "neck-ache"'), "not a finding of concepts.toml"),
    (('region = "cervical"', 'region = "C2"'), "region 'C2'"),
    (('icd10cm = "M54.12"', 'icd10cm = "M5412"'), "not an ICD-10-CM code"),
    (('fsn = "Cervical radiculopathy (disorder)"', 'fsn = "Cervical radiculopathy"'), "semantic tag"),
    (('source = "a source"', 'source = " "'), "source must not be empty"),
    (('target = "a reason"\n', 'target = "a reason"\ndisplay = "x"\n'), "needs exactly"),
])
def test_a_malformed_entry_is_refused_at_load_naming_it(tmp_path, change, message):
    SnomedMap(_written(tmp_path, ENTRY))  # the entry as written loads
    with pytest.raises(LexiconError, match=message):
        SnomedMap(_written(tmp_path, ENTRY.replace(*change)))


def test_a_concept_listed_twice_or_a_file_of_something_else_is_refused(tmp_path):
    with pytest.raises(LexiconError, match="listed twice"):
        SnomedMap(_written(tmp_path, ENTRY + ENTRY))
    with pytest.raises(LexiconError, match=r"\[\[concept\]\]"):
        SnomedMap(_written(tmp_path, "[concept]\nsctid = '54404000'\n"))
    with pytest.raises(LexiconError, match="not TOML"):
        SnomedMap(_written(tmp_path, "[[concept]\n"))


def test_the_packaged_map_loads():
    assert SnomedMap(PATH).concepts == SNOMED_MAP.concepts
