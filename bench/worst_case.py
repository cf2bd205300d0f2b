"""Worst-case text benchmark: how the text reader's cost grows with the size and shape of a text.

    make worst-case       # or: .venv/bin/python bench/worst_case.py [--quick] [--timeout S] [--out FILE]

For each shape of text (repeated triggers and targets, one huge sentence, many tiny sentences,
long words without spaces, realistic prose) at sizes growing by 4x from 2 KB to 100 KB (and 1 MB
for the prose), it measures in process the function a hook call uses to read a record's text:

    TextReader().read_all([(TextSource(ref, element, text, date), from_report)], deadline)

with a new TextReader for every repetition (its caches by content start empty) and the
repetition's median kept. Then the whole hook call (service.create_app, Flask test client: JSON,
FHIR validation, the text, the rules, the cards) for the largest sizes of each shape, with the
text as the note of an encounter-sign record coded M54.11 and M43.11 (so the rules read it), a
new text each time, and the production budget (SPINE_CDS_HOOK_DEADLINE, 1 s).

Every measurement runs in a worker process, killed after --timeout seconds (20; 3 with --quick)
and recorded as "timeout": the reader checks its Deadline only between sentences, so a
pathological sentence cannot be stopped from inside. A reading stopped by its Deadline is
"deadline exceeded". After a timeout the larger sizes of that shape are not measured (they would
only take longer) and the growth exponent is a lower bound.

It prints, per shape and size, ms and ms per KB; the growth exponent log(time ratio) / log(size
ratio) from the smallest to the largest size measured (1.0: linear), and the same between the two
largest sizes ("last step"); and flags a shape whose exponent (either) is above 1.3 or whose
largest size costs more than the 1 s hook deadline (or whose hook call does). The JSON goes
to bench/results/worst_case.json. Figures are the in-process cost on this machine, not a test
(tests/test_bench.py only checks that every shape gets its figures).

Then (first, or alone with --html-only; --no-html to skip) the HTML reader: html_to_text on 18 markup shapes
(typical notes as HTML; '<![', unclosed tags, '<div>' * n, misnested and foster-parented tags, huge
attributes, comment and CDATA floods, NUL, invalid UTF-8, lone surrogates, entity floods) at 100 KB, 256 KB
and 1 MB (8 and 32 KB with --quick), beside the home-made scanner it replaced and, where installed, the
libraries it was chosen from (selectolax, lxml, html5lib, justhtml; --html-readers to choose): ms, peak
memory, growth exponent and the characters of text read, each in a forked process killed at --timeout.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import load  # noqa: E402


def _use_code(argv: list[str]) -> Path:
    """--code DIR: measure the `service` package of another checkout (the reader before or after
    a rewrite); it goes first on sys.path before anything imports `service`."""
    for n, arg in enumerate(argv):
        value = argv[n + 1] if arg == "--code" and n + 1 < len(argv) else arg[7:] if arg.startswith("--code=") else None
        if value:
            code = Path(value).resolve()
            if not (code / "service" / "__init__.py").is_file():
                raise SystemExit(f"--code {value}: no service/ package there")
            sys.path.insert(0, str(code))
            return code
    return ROOT

KB = 1024
SIZES = (2 * KB, 8 * KB, 32 * KB, 100 * KB)
PROSE_SIZES = SIZES + (1024 * KB,)
QUICK_SIZES = (2 * KB, 4 * KB)
HOOK_DEADLINE_S = 1.0
EXPONENT_LIMIT = 1.3
HOOK_PATH = "/cds-services/spine-coding-encounter-sign"


# ------------------------------------------------------------------------------------ shapes
def repeated(unit: str):
    def make(size: int, rng: random.Random) -> str:
        return (unit * (size // len(unit) + 1))[:size]
    return make


_LEVELS = ["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"] + [f"T{n}-T{n + 1}" for n in range(1, 12)] + \
          ["T12-L1", "L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
_LEVEL_FINDINGS = [
    "no disc herniation, no stenosis", "mild disc bulge, no stenosis",
    "small central disc protrusion, mild canal stenosis", "facet arthropathy, moderate right foraminal stenosis",
    "no spondylolisthesis, patent foramina", "disc osteophyte complex, severe left foraminal stenosis",
    "mild uncovertebral hypertrophy, no significant stenosis", "grade 1 anterolisthesis, mild canal narrowing",
]


def one_sentence_levels(size: int, rng: random.Random) -> str:
    """Radiology level lines joined by semicolons, without a full stop or a line break."""
    parts, length, n = [], 0, 0
    while length < size:
        part = f"{_LEVELS[n % len(_LEVELS)]}: {_LEVEL_FINDINGS[(n * 3 + n // len(_LEVELS)) % len(_LEVEL_FINDINGS)]}"
        parts.append(part)
        length += len(part) + 2
        n += 1
    return "; ".join(parts)[:size]


_WORDS = ["Fracture", "Stenosis", "Normal", "Radiculopathy", "Unremarkable", "Spondylolisthesis", "C5-C6",
          "Negative", "Myelopathy", "Denies", "Anterolisthesis", "Trauma", "Numbness", "Cervical", "Weakness"]


def one_word_lines(size: int, rng: random.Random) -> str:
    out, length, n = [], 0, 0
    while length < size:
        out.append(_WORDS[n % len(_WORDS)])
        length += len(out[-1]) + 1
        n += 1
    return "\n".join(out)[:size]


def prose(documents: list[str]):
    """Whole documents, one after another, each copy with its own dates, numbers and severities
    (so a larger text is not the same sentences again), cut at a line end near the size."""
    def make(size: int, rng: random.Random) -> str:
        copies, length, n = [], 0, 0
        while length < size:
            copy = _fill(documents[n % len(documents)], rng)
            copies.append(copy)
            length += len(copy) + 2
            n += 1
        text = "\n\n".join(copies)
        cut = text.rfind("\n", 0, size)
        return text[: cut if cut > size // 2 else size]
    return make


SHAPES: dict[str, tuple[str, object]] = {}  # name -> (what it is, make(size, rng) -> text); filled below


def _shapes() -> None:
    SHAPES.update({
        "vs-fx": ("repeated triggers and targets: 'vs fx ' repeated", repeated("vs fx ")),
        "no-fracture": ("repeated triggers and targets: 'no fracture ' repeated", repeated("no fracture ")),
        "possible-radiculopathy": ("repeated triggers and targets: 'possible radiculopathy ? ' repeated",
                                   repeated("possible radiculopathy ? ")),
        "spondylolisthesis-list": ("repeated targets: 'spondylolisthesis, ' repeated", repeated("spondylolisthesis, ")),
        "levels-one-sentence": ("one huge sentence: 'C3-C4: no disc herniation, no stenosis; ...' without full stops",
                                one_sentence_levels),
        "fx-sentences": ("many tiny sentences: 'Fx. ' repeated", repeated("Fx. ")),
        "one-word-lines": ("many tiny sentences: one word a line", one_word_lines),
        "a-run": ("one long word: 'a' * n", repeated("a")),
        "levels-no-spaces": ("long word: 'C1-C2' * n without spaces", repeated("C1-C2")),
        "abbreviation-walk": ("long word: 'a.a.a.a.' * n, then ' Fx.' (a full stop before a space: the walk back "
                              "over the word)", lambda size, rng: repeated("a.")(size - 4, rng) + " Fx."),
        "prose-radiology": ("realistic prose: radiology reports (MRI, CT), hard-wrapped", prose(RADIOLOGY)),
        "prose-clinic": ("realistic prose: spine clinic notes, hard-wrapped", prose(CLINIC)),
        "prose-mixed": ("realistic prose: the 4 documents in turn", prose(RADIOLOGY[:1] + CLINIC[:1] + RADIOLOGY[1:] + CLINIC[1:])),
    })


def sizes_of(shape: str, quick: bool) -> tuple[int, ...]:
    if quick:
        return QUICK_SIZES
    return PROSE_SIZES if shape.startswith("prose") else SIZES


def text_of(shape: str, size: int) -> str:
    return SHAPES[shape][1](size, random.Random(f"{shape}/{size}"))


# ------------------------------------------------------------------------ realistic prose
# Four documents of the kind the service reads: the fields in braces change with every copy.
RADIOLOGY = [
    """\
MRI CERVICAL SPINE WITHOUT CONTRAST

Accession: {acc}    MRN: {mrn}    Exam date: {date}
Ordering provider: {doctor}, MD, Spine Clinic

CLINICAL HISTORY: {age}-year-old {sex} with neck pain for {weeks} weeks and {side} arm paresthesias \
radiating into the thumb and index finger. Evaluate for cervical radiculopathy. No history of trauma.

TECHNIQUE: Multiplanar, multisequence MR imaging of the cervical spine was performed without \
intravenous contrast on a 1.5 T magnet. Sagittal T1, T2 and STIR images and axial T2 and gradient \
echo images were obtained from the posterior fossa through T2.

COMPARISON: Radiographs of the cervical spine dated {date2}. No prior MRI is available.

FINDINGS:
Alignment: There is {sev} grade 1 anterolisthesis of C1 on C2 measuring {mm} mm, with widening of \
the atlantodental interval to {mm2} mm. The remainder of the cervical alignment is maintained with \
straightening of the normal lordosis, which may be positional or related to muscle spasm.
Vertebrae: Vertebral body heights are maintained. No acute fracture or marrow replacing lesion. \
Degenerative endplate changes are present at C5-C6 and C6-C7. The dens is intact.
Cord: The cervical spinal cord is normal in caliber and signal intensity. No syrinx. No cord \
compression. The craniocervical junction is otherwise unremarkable and the cerebellar tonsils are \
in normal position.
Soft tissues: The prevertebral soft tissues are within normal limits. No paraspinal collection.

Level by level:
C1-C2: Anterolisthesis as described, with mild pannus posterior to the dens. No significant canal \
stenosis.
C2-C3: No disc herniation, canal stenosis or foraminal narrowing.
C3-C4: Mild disc bulge. No canal stenosis. Patent neural foramina.
C4-C5: Small central disc protrusion without cord contact. Mild bilateral uncovertebral hypertrophy \
with mild left foraminal narrowing.
C5-C6: Broad based disc osteophyte complex effacing the ventral thecal sac with {sev} canal stenosis, \
AP diameter {mm3} mm. {sev_cap} {side} foraminal stenosis with probable contact of the exiting {side} \
C6 nerve root. Mild contralateral foraminal narrowing.
C6-C7: Disc bulge and facet arthropathy. Mild canal stenosis. Moderate bilateral foraminal stenosis.
C7-T1: No significant abnormality.

IMPRESSION:
1. {sev_cap} grade 1 anterolisthesis of C1 on C2 measuring {mm} mm, likely degenerative. \
Flexion and extension radiographs are recommended to assess for instability.
2. C5-C6 disc osteophyte complex with {sev} canal stenosis and {sev} {side} foraminal stenosis, which \
could account for the patient's {side} C6 radicular symptoms.
3. Multilevel degenerative disc disease, most pronounced at C5-C6 and C6-C7. No fracture. No \
myelopathy.

Electronically signed by {doctor2}, MD on {date} at {time}.
""",
    """\
CT CERVICAL SPINE WITHOUT CONTRAST

Accession: {acc}    MRN: {mrn}    Exam date: {date}

INDICATION: {age}-year-old {sex}, fall from standing height {days} days ago with persistent neck \
pain and occipital headache. Rule out fracture. Patient denies numbness or weakness.

TECHNIQUE: Axial images of the cervical spine were acquired from the skull base to T3 without \
intravenous contrast. Sagittal and coronal reformatted images were reviewed in bone and soft \
tissue windows. Dose reduction techniques were used.

COMPARISON: None available.

FINDINGS:
There is no acute fracture of the cervical spine. The occipital condyles, the anterior and \
posterior arches of C1 and the odontoid process are intact. The lateral masses of C1 are aligned \
with those of C2. The atlantodental interval measures {mm2} mm.
There is {sev} anterolisthesis of C2 on C3 measuring {mm} mm, unchanged in appearance on the \
scout image and associated with {sev} facet arthropathy, favored degenerative. Otherwise the \
alignment is normal. The facet joints are congruent without perched or jumped facets.
Multilevel degenerative changes with disc space narrowing and anterior osteophytes at C4-C5, \
C5-C6 and C6-C7. Uncovertebral hypertrophy narrows the {side} neural foramen at C5-C6.
The prevertebral soft tissues are not thickened. No epidural hematoma is seen within the limits \
of CT. The visualized lung apices are clear. Thyroid gland is unremarkable.
Incidental note is made of a {mm3} mm nodule in the {side} lobe of the thyroid, for which \
nonemergent ultrasound may be considered.

IMPRESSION:
1. No acute fracture or traumatic malalignment of the cervical spine.
2. {sev_cap} degenerative anterolisthesis of C2 on C3 measuring {mm} mm. If there is clinical \
concern for ligamentous injury, MRI is more sensitive.
3. Multilevel cervical spondylosis, with {side} C5-C6 foraminal narrowing.
4. {mm3} mm thyroid nodule, see above.

Findings were discussed with {doctor} by telephone on {date} at {time}.
Dictated by {doctor2}, MD.
""",
]

CLINIC = [
    """\
SPINE CLINIC NEW PATIENT VISIT

Date of service: {date}    MRN: {mrn}
Referring provider: {doctor}, MD

CHIEF COMPLAINT: Neck pain with {side} arm pain and tingling.

HISTORY OF PRESENT ILLNESS:
The patient is a {age}-year-old {sex} seen in consultation for neck pain that began {weeks} weeks \
ago without an inciting event. Denies trauma. The pain is a constant ache at the base of the skull \
and in the {side} trapezius, rated {pain}/10 at worst, with intermittent shooting pain down the \
{side} arm to the thumb and index finger. Numbness and tingling in the same distribution are worse \
when looking up or driving. Denies weakness, dropping objects, gait imbalance or bowel or bladder \
changes. Sleep is disturbed by the pain. Symptoms are partially relieved by ibuprofen and heat.
The patient completed {pt_weeks} weeks of physical therapy with home exercises and cervical \
traction, with modest improvement of the neck pain but persistent arm symptoms. No prior \
injections. No prior spine surgery.

PAST MEDICAL HISTORY: Hypertension. Type 2 diabetes mellitus without complications. Hyperlipidemia. \
Gastroesophageal reflux disease.
PAST SURGICAL HISTORY: Cholecystectomy. {side_cap} knee arthroscopy.
MEDICATIONS: Lisinopril 20 mg daily, metformin 1000 mg twice daily, atorvastatin 40 mg daily, \
omeprazole 20 mg daily, ibuprofen 600 mg as needed.
ALLERGIES: Penicillin (rash).
SOCIAL HISTORY: Works as an accountant. Never smoker. Drinks alcohol socially. Walks daily.
FAMILY HISTORY: Mother with rheumatoid arthritis. Father with coronary artery disease. Brother \
had a cervical fusion for myelopathy.

REVIEW OF SYSTEMS: Negative for fever, chills, weight loss, night sweats, chest pain, shortness \
of breath, dysphagia and headache other than as above. All other systems reviewed and negative.

PHYSICAL EXAMINATION:
Vitals: BP {bp}, pulse {pulse}, temperature 36.{temp} C, BMI {bmi}.
General: Alert and oriented, in no acute distress.
Neck: Tenderness over the {side} paraspinal muscles. Cervical rotation limited to the {side} by pain. \
Spurling test positive on the {side}, reproducing arm pain. Lhermitte sign negative.
Motor: 5/5 strength in the deltoids, biceps, triceps, wrist extensors, finger flexors and \
intrinsics bilaterally, except 4+/5 {side} wrist extension.
Sensation: Decreased to light touch in the {side} C6 dermatome. Otherwise intact.
Reflexes: Biceps and brachioradialis 1+ on the {side}, 2+ on the other side. Triceps 2+ \
bilaterally. Hoffmann sign negative bilaterally. No clonus. Toes downgoing.
Gait: Normal, able to tandem walk without difficulty.

IMAGING: MRI of the cervical spine dated {date2} was personally reviewed and shows a grade 1 \
anterolisthesis of C1 on C2 measuring {mm} mm and a C5-C6 disc osteophyte complex with {sev} \
{side} foraminal stenosis. No cord signal change.

ASSESSMENT:
1. {side_cap} C6 cervical radiculopathy due to C5-C6 foraminal stenosis, persistent after {pt_weeks} \
weeks of conservative care.
2. Degenerative spondylolisthesis of C1 on C2, without myelopathy. No evidence of instability on \
the available imaging; flexion-extension views have not been obtained.
3. Neck pain.

PLAN:
- Flexion and extension radiographs of the cervical spine to evaluate C1-C2 stability.
- EMG and nerve conduction study of the {side} upper extremity.
- Referral for {side} C5-C6 transforaminal epidural steroid injection.
- Continue home exercise program; gabapentin 300 mg at bedtime, titrate as tolerated.
- Discussed surgical options including anterior cervical discectomy and fusion if symptoms persist.
- Return in {followup} weeks, sooner for weakness, gait change or bowel or bladder symptoms.

{doctor2}, MD, Orthopaedic Spine Surgery
""",
    """\
SPINE CLINIC FOLLOW-UP

Date of service: {date}    MRN: {mrn}

INTERVAL HISTORY:
{age}-year-old {sex} returns for follow-up of neck pain and {side} arm radicular pain. Since the \
last visit the patient underwent a {side} C5-C6 transforaminal epidural steroid injection on \
{date2}, with about {relief} percent relief for two weeks, after which the arm pain returned. \
Numbness in the thumb persists. Reports new difficulty with buttons and handwriting over the past \
month, possibly due to pain. No falls. No bowel or bladder incontinence. Denies fever or weight loss.

EMG/NCS ({date2}): Findings consistent with a chronic {side} C6 radiculopathy with mild active \
denervation in the {side} pronator teres and flexor carpi radialis. No evidence of carpal tunnel \
syndrome or a generalized polyneuropathy.

FLEXION-EXTENSION RADIOGRAPHS ({date2}): Grade 1 anterolisthesis of C1 on C2 measuring {mm} mm in \
neutral, increasing to {mm2} mm in flexion, with reduction in extension. No fracture. The findings \
suggest mild instability at C1-C2.

EXAMINATION:
Vitals: BP {bp}, pulse {pulse}.
Spurling test positive on the {side}. Strength 4/5 in the {side} wrist extensors and 4+/5 in the \
{side} biceps, otherwise 5/5. Sensation decreased in the {side} C6 distribution. Reflexes 1+ at the \
{side} biceps and brachioradialis, 2+ elsewhere. Hoffmann sign {hoffmann} on the {side}. No clonus. \
Gait is steady, tandem gait intact.

ASSESSMENT AND PLAN:
1. {side_cap} C6 radiculopathy, confirmed by EMG, with progressive weakness despite {pt_weeks} weeks \
of physical therapy, medications and an epidural injection. Given the progression, we discussed \
anterior cervical discectomy and fusion at C5-C6. Risks including dysphagia, hoarseness, \
infection, nonunion, adjacent segment disease and injury to the nerve roots, the spinal cord or \
the vertebral artery were discussed in detail, and the patient wishes to proceed.
2. Degenerative spondylolisthesis of C1 on C2 with mild dynamic instability on flexion-extension \
views, without myelopathy. No fracture. Will obtain a CT of the craniocervical junction for \
planning and discuss posterior C1-C2 fusion at a separate visit if instability progresses.
3. Preoperative medical clearance with the primary care physician. Hold ibuprofen for seven days \
before surgery. Hemoglobin A1c {a1c}.

Follow up at the preoperative visit in {followup} weeks.

{doctor2}, MD
""",
]

_NAMES = ["Patel", "Nguyen", "Okafor", "Schmidt", "Rossi", "Kowalski", "Haddad", "Lindqvist", "Moreau", "Tanaka"]


def _fill(template: str, rng: random.Random) -> str:
    severity = rng.choice(["mild", "moderate", "severe"])
    side = rng.choice(["left", "right"])
    values = {
        "acc": f"RAD{rng.randint(10**7, 10**8 - 1)}", "mrn": str(rng.randint(10**6, 10**7 - 1)),
        "date": f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2026",
        "date2": f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2025",
        "time": f"{rng.randint(7, 19):02d}:{rng.randint(0, 59):02d}",
        "doctor": rng.choice(_NAMES), "doctor2": rng.choice(_NAMES),
        "age": rng.randint(34, 86), "sex": rng.choice(["woman", "man"]),
        "weeks": rng.randint(6, 30), "days": rng.randint(1, 10), "pt_weeks": rng.randint(6, 16),
        "side": side, "side_cap": side.capitalize(), "sev": severity, "sev_cap": severity.capitalize(),
        "mm": rng.randint(2, 6), "mm2": rng.randint(3, 8), "mm3": rng.randint(5, 14),
        "pain": rng.randint(4, 9), "relief": rng.choice([30, 40, 50, 60, 70]),
        "bp": f"{rng.randint(110, 160)}/{rng.randint(64, 96)}", "pulse": rng.randint(56, 96),
        "temp": rng.randint(4, 9), "bmi": f"{rng.randint(21, 36)}.{rng.randint(0, 9)}",
        "followup": rng.choice([2, 4, 6, 8]), "hoffmann": rng.choice(["negative", "equivocal"]),
        "a1c": f"{rng.randint(5, 8)}.{rng.randint(0, 9)} percent",
    }
    out = []
    for line in template.format_map(values).split("\n"):  # hard-wrapped as EHRs send them
        out.append(textwrap.fill(line, width=78, break_on_hyphens=False) if line else "")
    return "\n".join(out).strip()


_shapes()


# ------------------------------------------------------------------- the HTML reader
# The markup shapes an attachment can carry, for service.clinical_text.html_to_text (the reader of the code
# measured) against the candidates it was chosen from, where installed (pip install selectolax lxml html5lib
# justhtml; the bench never installs them), and the home-made scanner it replaced (below, kept as the
# baseline). Each measurement in a forked process (killed at the timeout), peak memory from VmHWM.
HTML_SIZES = (100 * KB, 256 * KB, 1024 * KB)  # 1 MB: the reader's MAX_MARKUP_CHARS
HTML_QUICK_SIZES = (8 * KB, 32 * KB)


def _html_unit(unit: str):
    return lambda size: (unit * (size // len(unit) + 1))[:size]


def _html_halves(first: str, second: str):
    return lambda size: _html_unit(first)(size // 2) + _html_unit(second)(size - size // 2)


def _html_notes(size: int) -> str:
    import html as _h
    text = text_of("prose-mixed", size)
    return "".join("<p>" + _h.escape(p).replace("\n", "<br>\n") + "</p>\n" for p in text.split("\n\n"))[:size]


def _html_bad_utf8(size: int) -> str:
    return (b"No fracture \xff\xfe\xc3( \xed\xa0\x80 <p>C1-C2</p>" * (size // 30 + 1))[:size].decode("utf-8", "replace")


HTML_SHAPES = {
    "notes": ("typical notes: the prose documents as <p>/<br> HTML", _html_notes),
    "lt-bang": ("'<![' repeated (broke html.parser)", _html_unit("<![")),
    "unclosed-tags": ("'<a ' repeated: one tag, its attributes never closed", _html_unit("<a ")),
    "div-deep": ("'<div>' repeated: nesting as deep as the markup", _html_unit("<div>")),
    "div-deep-close-p": ("'<div>' * n then '</p>' * n: a scope walk per end tag", _html_halves("<div>", "</p>")),
    "b-p": ("'<b><p>' repeated: the adoption agency", _html_unit("<b><p>")),
    "a-table-b": ("'<a><table><b>x' repeated: foster parenting", _html_unit("<a><table><b>x")),
    "td-flood": ("'<td>x' repeated", _html_unit("<td>x")),
    "huge-attribute": ("one attribute the size of the markup", lambda size: '<p title="' + "x" * (size - 20) + '">t</p>'),
    "comments": ("'<!-- x -->' repeated", _html_unit("<!-- x -->")),
    "comment-open": ("'<!--' repeated, never closed", _html_unit("<!--")),
    "cdata": ("'<![CDATA[' repeated", _html_unit("<![CDATA[")),
    "nul": ("NUL characters among text and tags", _html_unit("No fracture.\x00<p>\x00</p>")),
    "bad-utf8": ("invalid UTF-8 decoded with replacement characters", _html_bad_utf8),
    "surrogates": ("lone surrogates among tags", _html_unit("a\ud800<p>\udfff</p>")),
    "entities": ("'&amp;' repeated", _html_unit("&amp;")),
    "entities-open": ("'&amp' repeated, no semicolon", _html_unit("&amp")),
    "lt-text": ("'pain < 5 ' repeated: a '<' that is text", _html_unit("pain < 5 ")),
}

_SCANNER_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "td", "th", "ul",
                   "ol", "table", "hr", "pre", "blockquote", "dt", "dd"}
_SCANNER_SKIPPED = {"script", "style", "head", "title"}


def _finish(parts: list[str]) -> str:
    import re
    return re.sub(r"\n\s*\n+", "\n", re.sub(r"[ \t\r\f\v]+", " ", "".join(parts))).strip()


def scanner_html_to_text(markup: str) -> str:
    """The home-made linear scanner html_to_text was until issue 11, as the baseline."""
    import html as _h
    import re
    tag_name = re.compile(r"</?\s*([A-Za-z][A-Za-z0-9]*)")
    parts, lowered, position, length = [], markup.lower(), 0, len(markup)
    while position < length:
        start = markup.find("<", position)
        if start < 0:
            parts.append(_h.unescape(markup[position:]))
            break
        parts.append(_h.unescape(markup[position:start]))
        if markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            position = length if end < 0 else end + 3
            continue
        end = markup.find(">", start + 1)
        if end < 0:
            break
        tag = tag_name.match(markup, start, end)
        position = end + 1
        if tag is None:
            continue
        name = tag.group(1).lower()
        if name in _SCANNER_BLOCKS:
            parts.append("\n")
        elif name in _SCANNER_SKIPPED and markup[start + 1:tag.start(1)].strip() != "/":
            close = lowered.find("</" + name, position)
            if close < 0:
                break
            after = markup.find(">", close)
            position = length if after < 0 else after + 1
    return _finish(parts)


def _selectolax(markup: str) -> str:
    from selectolax.lexbor import LexborHTMLParser
    top = LexborHTMLParser(markup).root
    if top is None:
        return ""
    top = top.parent or top
    top_id, parts, node = top.mem_id, [], top
    while True:
        tag = node.tag
        if tag == "-text":
            parts.append(node.text_content or "")
        elif node.mem_id == top_id or tag[0] not in "-!" and tag not in _SCANNER_SKIPPED:
            if tag in _SCANNER_BLOCKS:
                parts.append("\n")
            if node.child is not None:
                node = node.child
                continue
        while node.mem_id != top_id and node.next is None:
            node = node.parent
            if node.tag in _SCANNER_BLOCKS:
                parts.append("\n")
        if node.mem_id == top_id:
            return _finish(parts)
        node = node.next


def _etree_text(root) -> str:
    from lxml import etree
    parts, skipping = [], 0
    for event, element in etree.iterwalk(root, events=("start", "end")):
        tag = element.tag.lower() if isinstance(element.tag, str) else None
        if event == "start":
            if tag is None:
                continue
            if skipping or tag in _SCANNER_SKIPPED:
                skipping += 1
                continue
            if tag in _SCANNER_BLOCKS:
                parts.append("\n")
            parts.append(element.text or "")
        else:
            if tag is not None and skipping:
                skipping -= 1
                if skipping:
                    continue
            elif tag in _SCANNER_BLOCKS:
                parts.append("\n")
            if not skipping:
                parts.append(element.tail or "")
    return _finish(parts)


def _lxml(markup: str) -> str:
    import lxml.html
    from lxml import etree
    try:
        return _etree_text(lxml.html.document_fromstring(markup))
    except (etree.ParserError, ValueError):
        return ""


def _html5lib(markup: str) -> str:
    import html5lib
    return _etree_text(html5lib.parse(markup, treebuilder="lxml", namespaceHTMLElements=False).getroot())


def _justhtml(markup: str) -> str:
    from justhtml import JustHTML
    parts, stack = [], [(JustHTML(markup).root, False)]
    while stack:
        node, leaving = stack.pop()
        name = getattr(node, "name", None)
        if leaving:
            parts.append("\n")
        elif name == "#text":
            parts.append(node.data or "")
        elif name in ("#document", "#document-fragment") or name and name[0] != "#" and name not in _SCANNER_SKIPPED:
            if name in _SCANNER_BLOCKS:
                parts.append("\n")
                stack.append((node, True))
            stack.extend((child, False) for child in reversed(getattr(node, "children", None) or []))
    return _finish(parts)


def _service_reader(markup: str) -> str:
    from service.clinical_text import html_to_text
    return html_to_text(markup)


HTML_READERS = {"service": ("service.clinical_text.html_to_text of the code measured", None, _service_reader),
                "scanner": ("the home-made scanner before issue 11", None, scanner_html_to_text),
                "selectolax": ("selectolax (lexbor)", "selectolax", _selectolax),
                "lxml": ("lxml.html (libxml2)", "lxml", _lxml),
                "html5lib": ("html5lib (pure Python)", "html5lib", _html5lib),
                "justhtml": ("justhtml (pure Python)", "justhtml", _justhtml)}


def _vm(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))


def _html_child(conn, reader: str, shape: str, size: int) -> None:
    try:
        markup = HTML_SHAPES[shape][1](size)
        read = HTML_READERS[reader][2]
        read(markup[:2000])
        gc.collect()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM: the peak from here on
        base, best, out = _vm("VmRSS"), None, ""
        for _ in range(3):
            started = time.perf_counter()
            out = read(markup)
            ms = 1000 * (time.perf_counter() - started)
            best = ms if best is None else min(best, ms)
            if ms > 1000:
                break
        conn.send({"status": "ok", "ms": round(best, 2), "peak_mb": round((_vm("VmHWM") - base) / 1024, 1),
                   "chars_out": len(out)})
    except BaseException as exc:  # noqa: BLE001 - the measurement's result
        conn.send({"status": f"error: {type(exc).__name__}"})


def _html_measure(reader: str, shape: str, size: int, timeout: float) -> dict:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_html_child, args=(child, reader, shape, size), daemon=True)
    process.start()
    row = parent.recv() if parent.poll(timeout) else {"status": "timeout", "lower_bound_ms": 1000 * timeout}
    process.kill()
    process.join()
    return {"bytes": size, **row}


def measure_html(quick: bool, timeout: float, readers: list[str] | None) -> dict:
    import importlib.util
    sizes = HTML_QUICK_SIZES if quick else HTML_SIZES
    chosen = readers or (["service", "scanner"] if quick else list(HTML_READERS))
    out = {"sizes": list(sizes), "readers": {}}
    for reader in chosen:
        about, module, _ = HTML_READERS[reader]
        if module and importlib.util.find_spec(module) is None:
            out["readers"][reader] = {"about": about, "status": "not installed"}
            continue
        entry = {"about": about, "shapes": {}}
        for shape in HTML_SHAPES:
            print(f"  html {reader} {shape} ...", file=sys.stderr, flush=True)
            rows = []
            for size in sizes:
                rows.append(_html_measure(reader, shape, size, timeout))
                if rows[-1]["status"] != "ok":
                    break
            done = [(r["bytes"], r["ms"]) for r in rows if r["status"] == "ok" and r["ms"] >= 0.5]
            slow = [r for r in rows if r["status"] == "timeout"]
            if slow and done:
                done.append((slow[0]["bytes"], slow[0]["lower_bound_ms"]))
            entry["shapes"][shape] = {"sizes": rows, "exponent": round(exponent(done), 2) if len(done) >= 2 else None,
                                      "exponent_is_lower_bound": bool(slow)}
        out["readers"][reader] = entry
    return out


def html_report(r: dict) -> str:
    sizes = r["sizes"]
    label = [f"{s // (1024 * KB)} MB" if s >= 1024 * KB else f"{s // KB} KB" for s in sizes]
    lines = ["", "The HTML reader: html_to_text on hostile and typical markup, a forked process each, best of 3: "
             "ms / peak MB above the start (TO = killed at the timeout)",
             f"{'shape':<18}{'reader':<12}" + "".join(f"{x:>18}" for x in label) + f"{'exponent':>10}"
             f"{'text out':>10}"]
    for shape in HTML_SHAPES:
        for reader, entry in r["readers"].items():
            if "shapes" not in entry:
                continue
            e = entry["shapes"][shape]
            cells = []
            for row in e["sizes"]:
                cells.append(f"{row['ms']:.1f} / {row['peak_mb']:.0f}" if row["status"] == "ok" else
                             "TO" if row["status"] == "timeout" else row["status"][:17])
            cells += [""] * (len(sizes) - len(cells))
            exp = "n/a" if e["exponent"] is None else ((">=" if e["exponent_is_lower_bound"] else "") + f"{e['exponent']:.2f}")
            ok = [row for row in e["sizes"] if row["status"] == "ok"]
            chars = f"{ok[-1]['chars_out']:,}" if ok else "-"  # characters of text from the largest size read
            lines.append(f"{shape:<18}{reader:<12}" + "".join(f"{c:>18}" for c in cells) + f"{exp:>10}{chars:>10}")
    missing = [name for name, entry in r["readers"].items() if entry.get("status") == "not installed"]
    if missing:
        lines.append("not installed (not measured): " + ", ".join(missing))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the worker
def _worker(conn, db_path: str) -> None:
    """Runs measurements sent by the parent, one at a time; the parent kills it on a timeout."""
    from service.deadline import Deadline, DeadlineExceeded
    from service.findings import TextReader

    state: dict = {}
    sources_of, count_of = _reader_api()

    def reps(policy, one):
        """Repetitions of `one()` (a dict with "ms"), each sent as soon as done."""
        total, count = 0.0, 0
        while True:
            try:
                result = one()
            except Exception as exc:  # noqa: BLE001 - reported as the measurement's result
                result = {"ms": 0.0, "status": f"error: {type(exc).__name__}: {str(exc)[:200]}"}
            count += 1
            total += result["ms"] / 1000
            conn.send(("rep", result))
            if result.get("status", "ok") != "ok" or count >= policy["max_reps"] or result["ms"] > 2000:
                break
            if count >= policy["min_reps"] and total >= policy["min_total_s"]:
                break
        conn.send(("done", None))

    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        kind = task[0]
        if kind == "read":
            _, shape, size, policy, deadline_s = task
            text = text_of(shape, size)
            sources = sources_of(text)

            def one_read():
                reader = TextReader()  # empty caches: nothing read before helps
                gc.collect()
                started, cpu = time.perf_counter(), time.process_time()
                status, found, limits = "ok", 0, {}
                try:
                    found, limits = count_of(reader.read_all(sources, Deadline(deadline_s)))
                except DeadlineExceeded:
                    status = "deadline exceeded"
                return {"ms": 1000 * (time.perf_counter() - started), "cpu_ms": 1000 * (time.process_time() - cpu),
                        "status": status, "findings": found, "chars": len(text), "limits": limits}
            reps(policy, one_read)
        elif kind == "prepare":
            if "app" not in state:
                state.update(_hook_app(db_path))
            conn.send(("done", None))
        elif kind == "hook":
            _, shape, size, policy = task
            base = text_of(shape, size)

            def one_hook():
                text = f"Note {uuid.uuid4().hex}\n{base}"  # a new text, and a new resource, every time
                body = _hook_body(text)
                raw = json.dumps(body).encode()
                store, spy = state["store"], state["spy"]
                timeouts = store.count("hook_timeouts")
                spy.update(calls=0, chars=0, ms=0.0)
                gc.collect()
                started = time.perf_counter()
                response = state["client"].post(HOOK_PATH, data=raw, content_type="application/json")
                ms = 1000 * (time.perf_counter() - started)
                answer = response.get_json(silent=True) or {}
                timed_out = store.count("hook_timeouts") - timeouts
                return {"ms": ms, "http_status": response.status_code, "cards": len(answer.get("cards", [])),
                        "deadline_answered": bool(timed_out), "text_read": spy["chars"] >= len(base),
                        "read_ms": spy["ms"], "body_bytes": len(raw),
                        "status": "ok" if response.status_code == 200 else f"HTTP {response.status_code}"}
            reps(policy, one_hook)
        elif kind == "ping":
            conn.send(("pong", None))


def _reader_api():
    """How to call the reader of the code measured: `read_all([(TextSource, from_report)], deadline)`
    returning findings (the reader before the rewrite), or `read_all([Source], deadline)` returning
    a Reading with its findings and the caps it reached (service/nlp/reader.py)."""
    ref, element, date = "DocumentReference/worst-case", "content[0].attachment", "2026-11-20"
    try:
        from service.nlp.reader import Source
    except ImportError:
        from service.record import TextSource

        return (lambda text: [(TextSource(ref, element, text, date), False)]), (lambda found: (len(found), {}))
    return ((lambda text: [Source(ref, element, text, date, False)]),
            (lambda reading: (len(reading.findings), dict(reading.limits))))


def _source_text(source) -> str:
    return source.text if hasattr(source, "text") else source[0].text


def _hook_app(db_path: str) -> dict:
    """The app as `spine-cds serve` runs it (warmed up, loaded objects frozen), in this worker."""
    from service import collector, create_app
    from service.cli import warm_up

    app = create_app({"database_url": f"sqlite:///{db_path}", "log_level": "ERROR"})
    warm_up(app)
    gc.collect()
    gc.freeze()
    collector.in_worker()  # collections after the answer, as in a served worker
    runtime = app.extensions["spine_cds"]
    spy = {"calls": 0, "chars": 0, "ms": 0.0}
    read_all = runtime.reader.read_all

    def spied(sources, deadline=None):
        spy["calls"] += 1
        spy["chars"] += sum(len(_source_text(source)) for source in sources)
        started = time.perf_counter()
        try:
            return read_all(sources, deadline)
        finally:
            spy["ms"] += 1000 * (time.perf_counter() - started)
    runtime.reader.read_all = spied  # measures the reading inside the call; changes nothing else
    return {"app": app, "client": app.test_client(), "store": runtime.store, "spy": spy}


def _vignettes():
    """fhir_fixtures/build_vignettes.py of this checkout, by path (--code may put another
    checkout's bench/ first on sys.path)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_vignettes", ROOT / "fhir_fixtures" / "build_vignettes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VIGNETTES = _vignettes()


def _hook_body(text: str) -> dict:
    body = VIGNETTES.build({"id": "worst-case", "hook": "encounter-sign",
                            "conditions": [{"code": "M54.11"}, {"code": "M43.11"}], "notes": [text]})
    body["hookInstance"] = str(uuid.uuid4())
    return body


class Worker:
    """A forked worker process; `run` returns its repetitions, or a timeout after killing it."""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self.process = None
        self.restarts = 0
        self.app_ready = False

    def _start(self) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, self.db_path), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.conn.close()
            self.process = None
            self.app_ready = False

    def prepare_app(self, timeout: float = 180) -> None:
        """Builds the app in the worker (not timed: loading, warm-up), once per worker."""
        if not self.app_ready:
            _, failure = self.run(("prepare",), timeout)
            if failure:
                raise SystemExit(f"the app could not be built in the worker: {failure}")
            self.app_ready = True

    def run(self, task: tuple, timeout: float) -> tuple[list[dict], str | None]:
        """Each repetition must come within `timeout` seconds of the previous one."""
        if self.process is None:
            self._start()
        self.conn.send(task)
        results: list[dict] = []
        wait = timeout
        while True:
            if not self.conn.poll(wait):
                self.kill()
                self.restarts += 1
                return results, "timeout"
            try:
                kind, value = self.conn.recv()
            except EOFError:
                self.kill()
                self.restarts += 1
                return results, "worker died"
            if kind == "done":
                return results, None
            results.append(value)
            wait = timeout


# ------------------------------------------------------------------------------ measuring
def exponent(points: list[tuple[int, float]]) -> float | None:
    (s0, t0), (s1, t1) = points[0], points[-1]
    if s1 == s0 or t0 <= 0 or t1 <= 0:
        return None
    return math.log(t1 / t0) / math.log(s1 / s0)


SLOW = ("timeout", "deadline exceeded")  # the measurements that say "at least this long"


def summarise(reps: list[dict], failure: str | None, timeout: float) -> dict:
    if failure:
        out = {"status": failure, "ms": None, "reps": len(reps)}
        if failure == "timeout":
            out["lower_bound_ms"] = 1000 * timeout
        return out
    bad = [r for r in reps if r.get("status", "ok") != "ok"]
    if bad:
        out = {"status": bad[0]["status"], "ms": None, "reps": len(reps),
               **{k: v for k, v in bad[0].items() if k not in ("ms", "status")}}
        if bad[0]["status"] == "deadline exceeded":
            out["lower_bound_ms"] = bad[0]["ms"]
        return out
    ms = statistics.median(r["ms"] for r in reps)
    out = {"status": "ok", "ms": round(ms, 3), "min_ms": round(min(r["ms"] for r in reps), 3), "reps": len(reps)}
    for key in ("cpu_ms",):
        if key in reps[0]:
            out[key] = round(statistics.median(r[key] for r in reps), 3)
    for key in ("findings", "chars", "limits", "http_status", "cards", "deadline_answered", "text_read", "body_bytes"):
        if key in reps[0]:
            out[key] = reps[0][key]
    if "read_ms" in reps[0]:
        out["read_ms"] = round(statistics.median(r["read_ms"] for r in reps), 3)
    return out


def measure_shape(worker: Worker, shape: str, quick: bool, timeout: float, policy: dict) -> dict:
    entry = {"about": SHAPES[shape][0], "sizes": []}
    stopped = None
    for size in sizes_of(shape, quick):
        row = {"bytes": size, "kb": round(size / KB, 1)}
        if stopped:
            row.update(status="not run", why=f"{stopped['kb']:g} KB: {stopped['status']}")
        else:
            print(f"  {shape} {size // KB} KB ...", file=sys.stderr, flush=True)
            reps, failure = worker.run(("read", shape, size, policy, timeout), timeout)
            row.update(summarise(reps, failure, timeout))
            if row["status"] == "ok":
                row["ms_per_kb"] = round(row["ms"] / (size / KB), 4)
                # a reader that stops reading at a cap did not read the whole text: not a point
                # of the growth curve (a sentence cut short is still read, and still counts)
                row["read_partly"] = any("truncated" in k or "not-read" in k for k in row.get("limits") or {})
            else:
                stopped = row
        entry["sizes"].append(row)
    done = [(r["bytes"], r["ms"]) for r in entry["sizes"] if r["status"] == "ok" and not r["read_partly"]]
    entry["exponent"] = round(exponent(done), 2) if len(done) >= 2 else None
    # between the two largest sizes measured: a cost that turns super-linear only late shows here
    entry["exponent_last_step"] = round(exponent(done[-2:]), 2) if len(done) >= 2 else None
    entry["exponent_is_lower_bound"] = False
    if stopped and done and "lower_bound_ms" in stopped:
        bound = exponent([done[0], (stopped["bytes"], stopped["lower_bound_ms"])])
        if entry["exponent"] is None or (bound is not None and bound > entry["exponent"]):
            entry["exponent"], entry["exponent_is_lower_bound"] = round(bound, 2), True
    return entry


def flags_of(entry: dict) -> list[str]:
    flags = []
    if entry["exponent"] is not None and entry["exponent"] > EXPONENT_LIMIT:
        flags.append(f"super-linear (exponent {'>= ' if entry['exponent_is_lower_bound'] else ''}"
                     f"{entry['exponent']} > {EXPONENT_LIMIT})")
    elif entry.get("exponent_last_step") is not None and entry["exponent_last_step"] > EXPONENT_LIMIT:
        sizes = [r for r in entry["sizes"] if r["status"] == "ok" and not r["read_partly"]][-2:]
        flags.append(f"super-linear from {sizes[0]['kb']:g} to {sizes[1]['kb']:g} KB (exponent "
                     f"{entry['exponent_last_step']} > {EXPONENT_LIMIT}; {entry['exponent']} over the whole range)")
    last = entry["sizes"][-1]
    over = [r for r in entry["sizes"] if r["status"] in SLOW]
    failed = [r for r in entry["sizes"] if r["status"] not in SLOW + ("ok", "not run")]
    if over:
        flags.append(f"{over[0]['kb']:g} KB: {over[0]['status']} (> {over[0]['lower_bound_ms'] / 1000:.3g} s, "
                     f"over the {HOOK_DEADLINE_S:g} s hook deadline)")
    elif failed:
        flags.append(f"{failed[0]['kb']:g} KB: {failed[0]['status']}")
    elif last["status"] == "ok" and last["ms"] > 1000 * HOOK_DEADLINE_S:
        flags.append(f"{last['kb']:g} KB costs {last['ms'] / 1000:.2f} s, over the {HOOK_DEADLINE_S:g} s hook deadline")
    for hook in entry.get("hook", []):
        if hook["status"] != "ok" or hook["ms"] > 1000 * HOOK_DEADLINE_S or hook.get("deadline_answered"):
            what = hook["status"] if hook["status"] != "ok" else (
                f"{hook['ms'] / 1000:.2f} s" + (", answered no cards at the deadline" if hook.get("deadline_answered") else ""))
            flags.append(f"hook call at {hook['kb']:g} KB: {what}")
    return flags


# -------------------------------------------------------------------------------- report
def _cell(row: dict) -> str:
    if row["status"] == "ok":
        return f"{row['ms']:.1f} ({row['ms_per_kb']:.2f})" + ("#" if row.get("read_partly") else
                                                               "*" if row.get("limits") else "")
    if row["status"] == "not run":
        return "-"
    if row["status"] in SLOW:
        return f"> {row['lower_bound_ms'] / 1000:.3g} s {'TO' if row['status'] == 'timeout' else 'DL'}"
    return "ERROR"


def report(r: dict) -> str:
    sizes = sorted({row["bytes"] for e in r["shapes"].values() for row in e["sizes"]})
    label = {s: (f"{s // (1024 * KB)} MB" if s >= 1024 * KB else f"{s // KB} KB") for s in sizes}
    lines = [f"Worst-case text benchmark ({r['mode']}) — {r['machine']['cores']} cores, {r['machine']['cpu']}, "
             f"Python {r['machine']['python']}; timeout {r['timeout_s']:g} s a measurement",
             f"code measured: {r['code']}",
             "TextReader().read_all in process, a new reader each repetition: ms (ms per KB); "
             "TO = killed at the timeout, DL = Deadline exceeded, - = not run after a smaller size failed, "
             "* = a cap of the reader cut a sentence short, # = it read only part of the text (left out of the "
             "exponents; the JSON's limits say which)",
             "",
             f"{'shape':<24}" + "".join(f"{label[s]:>19}" for s in sizes) + f"{'exponent':>10}{'last step':>11}"]
    for name, e in r["shapes"].items():
        by_size = {row["bytes"]: row for row in e["sizes"]}
        cells = "".join(f"{_cell(by_size[s]) if s in by_size else '':>19}" for s in sizes)
        exp = "n/a" if e["exponent"] is None else f"{'>=' if e['exponent_is_lower_bound'] else ''}{e['exponent']:.2f}"
        last = "n/a" if e.get("exponent_last_step") is None else f"{e['exponent_last_step']:.2f}"
        lines.append(f"{name:<24}{cells}{exp:>10}{last:>11}")
    lines += ["", "Whole hook call (create_app + Flask test client, encounter-sign, M54.11 + M43.11, the text as "
              f"the note; {HOOK_DEADLINE_S:g} s budget):",
              f"{'shape':<24}{'size':>8}{'ms':>11}{'read ms':>10}{'HTTP':>6}{'cards':>7}  answer"]
    for name, e in r["shapes"].items():
        for h in e.get("hook", []):
            if h["status"] == "ok":
                answer = ("no cards: deadline exceeded" if h["deadline_answered"] else "in time") + \
                         ("" if h["text_read"] else "; TEXT NOT READ")
                lines.append(f"{name:<24}{label[h['bytes']]:>8}{h['ms']:>11.1f}{h['read_ms']:>10.1f}"
                             f"{h['http_status']:>6}{h['cards']:>7}  {answer}")
            else:
                slow = f"> {h['lower_bound_ms'] / 1000:.3g} s" if "lower_bound_ms" in h else "-"
                lines.append(f"{name:<24}{label[h['bytes']]:>8}{slow:>11}{'':>10}{'':>6}{'':>7}  {h['status']}")
    lines += ["", f"Flags (exponent > {EXPONENT_LIMIT}, or over the {HOOK_DEADLINE_S:g} s hook deadline):"]
    flagged = {name: e["flags"] for name, e in r["shapes"].items() if e["flags"]}
    for name, flags in flagged.items():
        lines.append(f"  {name}: " + "; ".join(flags))
    if not flagged:
        lines.append("  none")
    lines.append(f"{len(flagged)} of {len(r['shapes'])} shapes flagged")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES[0] // KB} and "
                        f"{QUICK_SIZES[1] // KB} KB, one repetition, 3 s timeout: checks it runs")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a measurement is killed "
                        "(20; 3 with --quick)")
    parser.add_argument("--shapes", nargs="*", default=None, help="only these shapes (all by default)")
    parser.add_argument("--no-hook", action="store_true", help="the reader only, not the whole hook call")
    parser.add_argument("--no-html", action="store_true", help="not the HTML reader's markup shapes")
    parser.add_argument("--html-only", action="store_true", help="only the HTML reader's markup shapes")
    parser.add_argument("--html-readers", nargs="*", default=None, help=f"HTML readers compared (all installed of "
                        f"{', '.join(HTML_READERS)}; service and scanner with --quick)")
    parser.add_argument("--code", type=Path, default=None, help="the checkout whose service/ is measured "
                        "(default: this one), e.g. a worktree of the reader before a rewrite")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "worst_case.json")
    args = parser.parse_args(argv)
    timeout = args.timeout or (3.0 if args.quick else 20.0)
    policy = ({"min_reps": 1, "max_reps": 1, "min_total_s": 0.0} if args.quick
              else {"min_reps": 3, "max_reps": 15, "min_total_s": 1.0})
    hook_policy = ({"min_reps": 1, "max_reps": 1, "min_total_s": 0.0} if args.quick
                   else {"min_reps": 3, "max_reps": 5, "min_total_s": 1.0})
    shapes = args.shapes or list(SHAPES)
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)}; shapes: {', '.join(SHAPES)}")

    # Loaded once here, before the workers fork: a worker killed at a timeout is replaced at once.
    import service.findings  # noqa: F401
    import service
    import service.record  # noqa: F401
    if not args.no_hook:
        from service.app import _TERMINOLOGY
        _TERMINOLOGY.load()
    gc.collect()
    gc.freeze()

    tmp = Path(tempfile.mkdtemp(prefix="spine-worst-case-"))
    worker = Worker(str(tmp / "spine-cds.sqlite3"))
    started = time.monotonic()
    results = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform(), "cpu": load.cpu_model()},
               "mode": "quick" if args.quick else "full", "timeout_s": timeout,
               "code": str(Path(service.__file__).resolve().parent.parent),
               "hook_deadline_s": HOOK_DEADLINE_S, "exponent_limit": EXPONENT_LIMIT, "shapes": {}}
    try:
        if not args.no_html:
            print("the HTML reader:", file=sys.stderr)
            results["html"] = measure_html(args.quick, timeout, args.html_readers)
        if args.html_only:
            shapes = []
        print("the reader, in process:", file=sys.stderr)
        for shape in shapes:
            results["shapes"][shape] = measure_shape(worker, shape, args.quick, timeout, policy)
        if not args.no_hook and shapes:
            print("the whole hook call:", file=sys.stderr)
            for shape in shapes:
                hook_sizes = sorted({sizes_of(shape, args.quick)[-1], min(100 * KB, sizes_of(shape, args.quick)[-1])})
                rows = []
                for size in hook_sizes:
                    print(f"  hook {shape} {size // KB} KB ...", file=sys.stderr, flush=True)
                    worker.prepare_app()
                    reps, failure = worker.run(("hook", shape, size, hook_policy), timeout)
                    row = {"bytes": size, "kb": round(size / KB, 1), **summarise(reps, failure, timeout)}
                    rows.append(row)
                results["shapes"][shape]["hook"] = rows
    finally:
        worker.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    for entry in results["shapes"].values():
        entry["flags"] = flags_of(entry)
    results["worker_restarts"] = worker.restarts
    results["measure_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    if "html" in results:
        print(html_report(results["html"]))
    print(f"\nmeasured in {results['measure_s']:.0f} s; JSON: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    _use_code(sys.argv[1:])
    sys.exit(main())
