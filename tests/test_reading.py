"""Reading documents, not sentences: each step of service/nlp/ by itself, and every entry of its
lexicon by its example (sections, spellings and abbreviations, modifiers), then the reader on
document shapes that broke the sentence reader (hard wraps, level lines, sections), its caps, and
the evidence policy (which texts count)."""
from __future__ import annotations

import base64
import copy
import json

import pytest

from service.deadline import Deadline, DeadlineExceeded
from service.nlp.concepts import LexiconError
from service.nlp.levels import CERVICAL, OAA
from service.nlp.modifiers import ModifierLexicon
from service.nlp.reader import Source, TextReader
from service.nlp.sections import SectionLexicon
from service.nlp.sentences import split
from service.nlp.spelling import SpellingLexicon

from .support import FIXTURES

READER = TextReader()


def read(text: str, report: bool = False, reader: TextReader = READER):
    return READER.read(Source("DiagnosticReport/r1" if report else "DocumentReference/n1", "text", text, None,
                              report)) if reader is READER else reader.read(Source("DocumentReference/n1", "text",
                                                                                   text, None, report))


def of(text: str, kind: str, report: bool = False):
    return [f for f in read(text, report) if f.kind == kind]


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split(text).spans]


# ------------------------------------------------------------------ sentences
def test_a_wrapped_line_is_one_sentence_and_keeps_its_negation():
    text = "Degenerative spondylolisthesis C1 on C2, acquired; no\n   trauma hx. Plan: PT."
    assert sentences(text)[0] == "Degenerative spondylolisthesis C1 on C2, acquired; no\n   trauma hx."
    assert [f.assertion for f in of(text, "trauma")] == ["negated"]


def test_line_breaks_that_end_sentences():
    text = ("FINDINGS:\nAlignment: anterolisthesis of C1 on C2, degenerative in\nappearance.\n"
            "- Neck pain\n- Numbness\n\nC5-C6: disc osteophyte complex. Mild\nleft foraminal narrowing.\n"
            "1. Degenerative anterolisthesis of C1 on C2.\n2. Mild C5-C6 spondylosis.\nNeck pain\nHeadache")
    assert sentences(text) == [
        "FINDINGS:", "Alignment: anterolisthesis of C1 on C2, degenerative in\nappearance.", "- Neck pain",
        "- Numbness", "C5-C6: disc osteophyte complex.", "Mild\nleft foraminal narrowing.",
        "1. Degenerative anterolisthesis of C1 on C2.", "2. Mild C5-C6 spondylosis.", "Neck pain", "Headache"]


def test_joined_level_lines_are_sentences_of_their_own():
    text = "C3-C4: no disc herniation, no stenosis; C4-C5: mild disc bulge; C5-C6: unremarkable."
    assert sentences(text) == ["C3-C4: no disc herniation, no stenosis", "C4-C5: mild disc bulge",
                               "C5-C6: unremarkable."]


def test_abbreviations_end_a_sentence_only_before_a_capital():
    assert sentences("Dr. Smith saw her. Denies trauma hx. MRI shows a slip.") == [
        "Dr. Smith saw her.", "Denies trauma hx.", "MRI shows a slip."]


def test_a_sentence_over_the_cap_is_cut_at_a_clause_break_and_counted():
    text = "; ".join(["no fracture"] * 400) + "."
    out = split(text, max_chars=300)
    assert out.long_sentences_cut >= 10
    assert all(e - s <= 300 for s, e in out.spans)
    assert all(text[e - 1] == ";" or e == len(text) for s, e in out.spans)


# ------------------------------------------------------------------ sections
SECTIONS = SectionLexicon()


@pytest.mark.parametrize("entry", SECTIONS.entries, ids=[f"{e.kind}:{e.literals[0]}:{e.documents}" for e in SECTIONS.entries])
def test_every_section_header_by_its_example(entry):
    report = entry.documents == "report"
    document = "report" if report else "note"
    for literal in entry.literals:  # every spelling is a header of this kind
        found = SECTIONS.sections(f"{literal.upper()}: text\n", document).sections
        assert found and found[0].kind.name == entry.kind, literal
    found = [f for f in read(entry.example, report) if f.kind == entry.example_finding]
    if entry.example_assertion == "dropped":
        assert found == [], entry.example
    else:
        assert found and found[0].assertion == entry.example_assertion, (entry.example, found)


def test_a_short_header_needs_its_colon():
    assert SECTIONS.sections("A\nPlan\n", "note").sections[-1].kind.name == "plan"
    assert [s.kind.name for s in SECTIONS.sections("A\n", "note").sections] == []


def test_section_effects_on_a_full_note():
    note = """HPI: 61 year old with right C2 radiculopathy.
PAST MEDICAL HISTORY: C5-C6 disc herniation, treated 2019.
FAMILY HISTORY: Sister with rheumatoid arthritis.
REVIEW OF SYSTEMS: Neurological: negative for dizziness, syncope, seizures, tremor, memory loss,
speech change, headaches, weakness or numbness.
ASSESSMENT: Right C2 radiculopathy.
DIFFERENTIAL DIAGNOSIS: Occipital neuralgia.
PLAN: If myelopathy develops, consider surgery."""
    found = read(note)
    assert {f.assertion for f in found if f.kind == "radiculopathy"} == {"affirmed"}
    assert [f.assertion for f in found if f.kind == "disc-disorder"] == ["historical"]
    assert [f for f in found if f.kind == "rheumatoid-arthritis"] == []
    assert {f.assertion for f in found if f.kind == "radicular-signs"} == {"negated"}
    assert [f.assertion for f in found if f.kind == "occipital-neuralgia"] == ["uncertain"]
    assert [f.assertion for f in found if f.kind == "myelopathy"] == ["uncertain"]


def test_section_lexicon_refuses_unknown_keys_and_kinds(tmp_path):
    path = tmp_path / "sections.toml"
    path.write_text('[kinds.x]\nassertion = "none"\n[[headers]]\nkind = "y"\nliterals = ["a"]\n'
                    'example = "e"\nexample_finding = "f"\nexample_assertion = "affirmed"\n')
    with pytest.raises(LexiconError, match="kind must be one of"):
        SectionLexicon(path)
    path.write_text('[kinds.x]\nassertion = "maybe"\n')
    with pytest.raises(LexiconError, match="assertion must be one of"):
        SectionLexicon(path)


# ------------------------------------------------------------------ level lines
def test_a_level_line_is_about_its_level_only():
    report = """FINDINGS:
C1-C2: Degenerative anterolisthesis of C1 on C2 measuring 3 mm.
C5-C6: Disc osteophyte complex with mild uncovertebral hypertrophy. Mild
left foraminal narrowing.
Mild multilevel spondylosis."""
    found = read(report, report=True)
    spondylosis = [f for f in found if f.kind == "spondylosis"]
    assert [(f.region, f.level) for f in spondylosis] == [(CERVICAL, "C5-C6"), (None, None)]
    assert [(f.region, f.level) for f in found if f.kind == "disc-disorder"] == [(CERVICAL, "C5-C6")]
    assert [f.region for f in found if f.kind == "foraminal-stenosis"] == [CERVICAL]
    assert [f.region for f in found if f.kind == "displacement"] == [OAA]


# ------------------------------------------------------------------ spelling
SPELLING = SpellingLexicon()


@pytest.mark.parametrize("entry", SPELLING.abbreviations + SPELLING.misspellings,
                         ids=[e.written for e in SPELLING.abbreviations + SPELLING.misspellings])
def test_every_spelling_entry_by_its_example(entry):
    normalized = SPELLING.normalize(entry.example)
    assert entry.means.lower() in normalized.text.lower()
    found = [f for f in read(entry.example) if f.kind == entry.example_finding]
    assert found, entry.example
    assert found[0].evidence.text == entry.example  # the evidence quotes the record's own words


@pytest.mark.parametrize("word", ["spondylitis", "spondylolysis", "degeneration", "fractured", "radiating",
                                  "myelitis", "stenotic", "physician"])
def test_real_words_near_the_vocabulary_are_not_corrected(word):
    assert SPELLING.correction(word) is None


@pytest.mark.parametrize("entry", SPELLING.spoken.examples, ids=[e.written for e in SPELLING.spoken.examples])
def test_every_spoken_level_by_its_example(entry):
    """Dictated levels read as the written level: the finding of the example takes its level, and
    the evidence quotes the dictated words."""
    normalized = SPELLING.normalize(entry.example)
    assert entry.means in normalized.text
    found = [f for f in read(entry.example) if f.kind == entry.example_finding]
    assert found and found[0].specific, entry.example
    assert found[0].level == entry.means
    assert found[0].evidence.text == entry.example


@pytest.mark.parametrize("text", SPELLING.spoken.not_level_examples)
def test_number_words_in_ordinary_prose_are_no_level(text):
    assert SPELLING.normalize(text).text in (text, text.replace("S one S two", "S1 S2"))
    assert all(f.region is None and not f.specific for f in read(text)), [f[:5] for f in read(text)]


def test_a_spoken_level_needs_a_number_of_its_column():
    assert SPELLING.normalize("C nine and L six were named.").text == "C nine and L six were named."
    assert SPELLING.normalize("Dr. C two saw her; C two root irritation.").text == \
        "Dr. C two saw her; C2 root irritation."


def test_short_words_are_never_corrected():
    assert SPELLING.correction("stenois") is None  # 7 letters: too many real words one edit apart


def test_positions_map_back_to_the_original():
    text = "AAI noted. Right C2 radiculapathy, improving."
    normalized = SPELLING.normalize(text)
    start = normalized.text.index("Right")
    end = normalized.text.index("improving.") + len("improving.")
    s, e = normalized.original_span(start, end)
    assert text[s:e] == "Right C2 radiculapathy, improving."


# ------------------------------------------------------------------ modifiers
MODIFIERS = ModifierLexicon()


@pytest.mark.parametrize("name", MODIFIERS.names)
def test_every_modifier_by_its_example(name):
    example, finding, not_finding = MODIFIERS.examples[name]
    found = read(example)
    assert any(name in f.modifiers for f in found if f.kind == finding), (example, found)
    if not_finding:
        assert not any(name in f.modifiers for f in found if f.kind == not_finding)


def test_a_cause_is_linked_to_the_finding_it_explains():
    found = read("Right C2 radiculopathy secondary to C1-C2 facet arthropathy. Incidental C5-C6 disc bulge.")
    spondylosis = [f for f in found if f.kind == "spondylosis"]
    disc = [f for f in found if f.kind == "disc-disorder"]
    assert spondylosis and ("radiculopathy", "occipito-atlanto-axial") in spondylosis[0].linked
    assert disc and not disc[0].linked


# ------------------------------------------------------------------ caps and the deadline
def test_caps_are_counted_not_silent():
    reader = TextReader(max_text_chars=2000, max_sentence_chars=200, max_record_chars=3000)
    text = ("Anterolisthesis of C1 on C2, " * 200)
    reading = reader.read_all([Source("DocumentReference/a", "t", text, None, False),
                               Source("DocumentReference/b", "t", text + " ", None, False),
                               Source("DocumentReference/c", "t", text + "  ", None, False)])
    assert reading.limits["text-truncated"] == 2
    assert reading.limits["long-sentence-cut"] >= 1
    assert reading.limits["record-text-not-read"] == 1
    described = reader.describe_limits(reading.limits)
    assert {d["limit"] for d in described} == {"text-truncated", "long-sentence-cut", "record-text-not-read"}


def test_the_deadline_interrupts_reading_inside_a_text():
    text = "vs fx " * 20000
    with pytest.raises(DeadlineExceeded):
        TextReader().read_all([Source("DocumentReference/a", "t", text, None, False)], Deadline(0.0))


# ------------------------------------------------------------------ which texts count
def _request(**changes):
    body = json.loads((FIXTURES / "vignettes" / "spl-specificity-fires-m43.10-c1-on-c2.json").read_text())
    body = copy.deepcopy(body)
    for path, value in changes.items():
        target = body
        *parents, last = path.split(".")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[last] = value
    return body


def _rules(client, body) -> list[str]:
    response = client.post("/cds-services/spine-coding-encounter-sign", json=body)
    assert response.status_code == 200
    return [c["extension"]["spine-coding-cds"]["rule"] for c in response.get_json()["cards"]]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from service import create_app

    path = tmp_path_factory.mktemp("reading") / "db.sqlite3"
    return create_app({"database_url": f"sqlite:///{path}", "public_base_url": "https://cds.test"}).test_client()


def test_a_cancelled_report_and_an_entered_in_error_note_are_not_evidence(client):
    assert "SPL-SPECIFICITY" in _rules(client, _request())
    body = _request()
    body["prefetch"]["diagnosticReports"]["entry"][0]["resource"]["status"] = "cancelled"
    body["prefetch"]["documentReferences"]["entry"][0]["resource"]["status"] = "entered-in-error"
    assert _rules(client, body) == []


def test_a_newer_final_report_supersedes_a_preliminary_one(client):
    body = _request()
    reports = body["prefetch"]["diagnosticReports"]
    first = reports["entry"][0]["resource"]
    first["status"] = "preliminary"
    final = copy.deepcopy(first)
    final.update(id="dr-2", status="final", effectiveDateTime="2026-11-03T09:00:00-05:00",
                 conclusion="No spondylolisthesis. Alignment is normal.")
    reports["entry"].append({"resource": final})
    body["prefetch"]["documentReferences"]["entry"] = []
    assert _rules(client, body) == []


def test_a_replaced_note_is_not_evidence(client):
    body = _request()
    body["prefetch"]["diagnosticReports"]["entry"] = []
    notes = body["prefetch"]["documentReferences"]["entry"]
    newer = copy.deepcopy(notes[0]["resource"])
    newer.update(id="note-2", relatesTo=[{"code": "replaces", "target": {"reference": "DocumentReference/note-1"}}])
    newer["content"][0]["attachment"]["data"] = base64.b64encode(b"Neck pain. Alignment is normal.").decode()
    notes.append({"resource": newer})
    assert _rules(client, body) == []


def test_an_acute_injury_in_a_note_of_an_earlier_encounter_is_history_now(client):
    body = json.loads((FIXTURES / "vignettes" / "spl-trauma-fires-nondisplaced-type-ii-dens.json").read_text())
    assert "SPL-TRAUMA" in _rules(client, body)
    body["prefetch"]["diagnosticReports"]["entry"] = []
    for entry in body["prefetch"]["documentReferences"]["entry"]:
        entry["resource"]["context"] = {"encounter": [{"reference": "Encounter/an-earlier-one"}]}
    assert "SPL-TRAUMA" not in _rules(client, body)
