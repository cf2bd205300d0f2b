"""Reading clinical text: every ConText trigger by its test sentence, levels however written,
the level that belongs to the finding, the ambiguous "RA", and lexicons refused when malformed."""
from __future__ import annotations

import json

import pytest

from service.nlp.reader import Source, TextReader
from service.nlp.concepts import ConceptLexicon, LexiconError
from service.nlp.context import ContextLexicon
from service.nlp.levels import (CERVICAL, CERVICOTHORACIC, LUMBAR, LUMBOSACRAL, MULTIPLE, OAA, THORACOLUMBAR,
                                find_levels)
from service.nlp.sentences import split_sentences

READER = TextReader()
CONTEXT = READER.context


def read(text: str):
    return READER.read(Source("DocumentReference/n1", "content[0].attachment", text, None, False))


def finding(text: str, kind: str):
    found = [f for f in read(text) if f.kind == kind]
    assert found, f"no {kind} in {text!r}"
    return found[0]


@pytest.mark.parametrize("rule", CONTEXT.rules, ids=[f"{r.category}:{r.text}" for r in CONTEXT.rules])
def test_every_trigger_by_its_sentence(rule):
    """Each rule of context_rules.json carries a sentence; the finding must get its assertion."""
    assert any(t.rule is rule for t in CONTEXT.triggers(rule.example)), "the sentence must contain its trigger"
    targets = [t for t in READER.concepts.targets(rule.example) if t.finding == rule.example_finding]
    assert targets, f"{rule.example!r} has no {rule.example_finding}"
    assert CONTEXT.assertions(rule.example, targets[:1]) == [rule.example_assertion]


@pytest.mark.parametrize("text,kind,assertion", [
    ("Cannot exclude a subtle fracture of the dens.", "fracture", "uncertain"),
    ("The study was negative for fracture.", "fracture", "negated"),
    ("No interval change in the degenerative anterolisthesis of C1 on C2.", "displacement", "affirmed"),
    ("No fracture, dislocation, or subluxation.", "dislocation", "negated"),
    ("No acute fracture. Anterolisthesis of C1 on C2.", "displacement", "affirmed"),
    ("Denies trauma; anterolisthesis of C1 on C2 is degenerative.", "displacement", "affirmed"),
    ("Prior epidural steroid injection at C5-6.", "conservative-care", "historical"),
    ("Status post C1-C2 fusion in 2015.", "displacement", None),
    ("Mother has rheumatoid arthritis.", "rheumatoid-arthritis", None),
])
def test_assertions_in_context(text, kind, assertion):
    found = [f for f in read(text) if f.kind == kind]
    if assertion is None:
        assert found == []
    else:
        assert found and found[0].assertion == assertion


@pytest.mark.parametrize("text,region,upper", [
    ("C1-C2", OAA, False), ("C1/2", OAA, False), ("C1 on C2", OAA, False), ("C0-C1", OAA, False),
    ("C1\u2013C2", OAA, False), ("atlanto-axial", OAA, False), ("atlantoaxial", OAA, False),
    ("craniocervical junction", OAA, False), ("odontoid", OAA, False), ("dens", OAA, False),
    ("occiput to C2", OAA, False), ("C2 on C3", CERVICAL, False), ("C5-6", CERVICAL, False),
    ("C7-T1", CERVICOTHORACIC, False), ("T12-L1", THORACOLUMBAR, False), ("L4 on L5", LUMBAR, False),
    ("L5-S1", LUMBOSACRAL, False), ("upper cervical", CERVICAL, True), ("high cervical", CERVICAL, True),
])
def test_levels_however_written(text, region, upper):
    mentions = find_levels(f"Anterolisthesis at {text}.")
    assert len(mentions) == 1
    assert mentions[0].segment_region == region and mentions[0].upper_cervical == upper


@pytest.mark.parametrize("text", ["occipital headache", "occipital neuralgia", "occipital scalp numbness",
                                  "T2 hyperintensity", "T1-weighted images", "S1 and S2 normal", "neck pain"])
def test_words_that_are_not_levels(text):
    assert find_levels(text) == []


def test_a_c2_root_is_occipito_atlanto_axial_but_a_c2_on_c3_slip_is_cervical():
    root = finding("Right C2 radiculopathy.", "radiculopathy")
    slip = finding("Anterolisthesis of C2 on C3.", "displacement")
    assert root.region == OAA and slip.region == CERVICAL


def test_the_level_belongs_to_its_own_finding():
    text = "History of C1-C2 fusion, with new anterolisthesis of L4 on L5 and C5-C6 disc bulge."
    assert finding(text, "displacement").region == LUMBAR
    assert finding(text, "disc-disorder").region == CERVICAL
    text = "Degenerative anterolisthesis of C1 on C2, and mild disc bulge at C5-6."
    assert finding(text, "displacement").level == "C1 on C2"


def test_two_levels_of_one_finding_are_multiple():
    assert finding("Spondylolisthesis at C1-C2 and L4-L5.", "displacement").region == MULTIPLE


def test_generic_level_is_not_specific():
    slip = finding("Upper cervical spondylolisthesis.", "displacement")
    assert slip.region == CERVICAL and not slip.specific and slip.upper_cervical


@pytest.mark.parametrize("text,is_ra", [
    ("Seropositive RA on methotrexate.", True),
    ("RA flare; rheumatology adjusted the DMARD.", True),
    ("Saturating 98% on RA.", False),
    ("SpO2 97% RA.", False),
    ("RA pressure is normal on echo.", False),
    ("Patient seen in the clinic, RA noted.", False),
    ("Long history of rheumatoid arthritis.", False),  # historical, not affirmed
    ("Rheumatoid arthritis of the cervical spine.", True),
])
def test_the_ambiguous_abbreviation_ra(text, is_ra):
    assert bool([f for f in read(text) if f.kind == "rheumatoid-arthritis" and f.affirmed]) == is_ra


def test_sentences_respect_abbreviations_and_decimals():
    text = "Slip measures 3.5 mm at C1-C2. Dr. Smith reviewed. No fracture\nImpression: stable"
    sentences = [text[s:e] for s, e in split_sentences(text)]
    assert sentences == ["Slip measures 3.5 mm at C1-C2.", "Dr. Smith reviewed.", "No fracture", "Impression: stable"]


def test_evidence_is_the_exact_sentence():
    found = finding("Findings: stable. Grade I anterolisthesis of C1 on C2 measuring 3 mm.", "displacement")
    assert found.evidence.text == "Grade I anterolisthesis of C1 on C2 measuring 3 mm."
    assert found.evidence.reference == "DocumentReference/n1"


# --------------------------------------------------------------- schema checks
def test_context_lexicon_refuses_unknown_keys(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [{"literal": "no", "category": "NEGATED_EXISTENCE", "direction": "FORWARD",
                                           "example": "No fracture.", "example_finding": "fracture",
                                           "example_assertion": "negated", "scope": 3}]}))
    with pytest.raises(LexiconError, match="unknown keys \\['scope'\\]"):
        ContextLexicon(path)


@pytest.mark.parametrize("rule,message", [
    ({"literal": "no", "category": "NEGATION", "direction": "FORWARD"}, "category must be one of"),
    ({"literal": "no", "category": "NEGATED_EXISTENCE", "direction": "SIDEWAYS"}, "direction must be one of"),
    ({"category": "NEGATED_EXISTENCE", "direction": "FORWARD"}, "exactly one of literal or pattern"),
    ({"pattern": "(", "category": "NEGATED_EXISTENCE", "direction": "FORWARD"}, "invalid pattern"),
])
def test_context_lexicon_schema(tmp_path, rule, message):
    rule = {"example": "No fracture.", "example_finding": "fracture", "example_assertion": "negated", **rule}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [rule]}))
    with pytest.raises(LexiconError, match=message):
        ContextLexicon(path)


def test_context_lexicon_requires_a_test_sentence(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [{"literal": "no", "category": "NEGATED_EXISTENCE", "direction": "FORWARD"}]}))
    with pytest.raises(LexiconError, match=r"example is required \(every entry is tested by its example\)"):
        ContextLexicon(path)


def test_concept_lexicon_schema(tmp_path):
    path = tmp_path / "concepts.toml"
    path.write_text('[fracture]\nlevel_from = "segment"\npatterns = ["\\\\bfracture\\\\b"]\ncolour = "red"\n')
    with pytest.raises(LexiconError, match="unknown keys"):
        ConceptLexicon(path)
    path.write_text('[fracture]\nlevel_from = "everywhere"\npatterns = ["x"]\n')
    with pytest.raises(LexiconError, match="level_from"):
        ConceptLexicon(path)


def test_shipped_lexicons_cover_every_finding_of_the_rules():
    findings = set(ConceptLexicon().findings)
    assert {"displacement", "fracture", "trauma", "congenital", "acquired", "myelopathy", "cord-compression",
            "radiculopathy", "c1c2-radicular", "radicular-signs", "occipital-neuralgia", "axial-neck-pain",
            "spondylosis", "disc-disorder", "instability", "rheumatoid-arthritis", "electrodiagnostics",
            "conservative-care"} <= findings
    assert {r.example_finding for r in CONTEXT.rules} <= findings


def test_concept_patterns_must_be_lower_case_or_wholly_cased(tmp_path):
    path = tmp_path / "concepts.toml"
    path.write_text('[fracture]\nlevel_from = "segment"\npatterns = ["\\\\bFracture\\\\b"]\n')
    with pytest.raises(LexiconError, match="write it in lower case"):
        ConceptLexicon(path)
    path.write_text('[rheumatoid-arthritis]\nlevel_from = "none"\npatterns = ["seropositive (?-i:RA)"]\n')
    with pytest.raises(LexiconError, match="mixes cases"):
        ConceptLexicon(path)


def test_anchors_are_read_from_the_patterns():
    concepts = ConceptLexicon().concepts
    assert "listhesis" in concepts["displacement"].anchors
    assert concepts["rheumatoid-arthritis"].cased_anchors == ("RA",)
    assert concepts["imaging"].cased_anchors == ("CT", "MRI")


@pytest.mark.parametrize("text,kind", [("SEROPOSITIVE RA, on methotrexate.", "rheumatoid-arthritis"),
                                       ("MRI OF THE CERVICAL SPINE: ANTEROLISTHESIS OF C1 ON C2.", "displacement"),
                                       ("JEFFERSON FRACTURE.", "fracture")])
def test_upper_case_text_is_read(text, kind):
    assert finding(text, kind).affirmed


def test_characters_that_lower_case_to_two_keep_positions():
    text = "\u0130stanbul trip. Anterolisthesis of C1 on C2."
    found = finding(text, "displacement")
    assert found.phrase == "Anterolisthesis" and found.level == "C1 on C2"
