"""Benchmark workloads, generated reproducibly (fixed seed) from the vignettes' builders.

- typical: an order-sign record of about 40 resources (Conditions, Procedures, 6 DiagnosticReports
  with report text, 3 notes; about 12 KB of clinical text) with one draft order;
- large: about 300 resources and 60 KB of text;
- sizes: 40, 100 and 300 resources, to show how the cost grows with the record.

Every record is new in every resource: ids (the Patient's and the Encounter's too, with every
reference to them), dates and the text of each report and note (an accession line of its own)
depend on the record's seed, so no resource of one record repeats byte for byte in another. The
service caches parsed resources and read texts by content: a workload that repeated its
Conditions, Procedures, Patient and Encounter (31 of the 40 resources, as this file once did)
measured the cache, not the service. Only the "repeat" workload of bench/run.py sends one record
again on purpose. `shared_resources()` checks it.

The clinical sentences (so the rules have real work to do) are those of the vignettes as they
stood when this workload was defined, frozen in bench/clinical_sentences.json and mixed with
ordinary examination and history sentences: a new vignette must not change what the benchmark
measures (adding issue 10's long hard-wrapped vignettes made the "same" typical record 40 % heavier).
"""
from __future__ import annotations

import importlib.util
import json
import random
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("build_vignettes", ROOT / "fhir_fixtures" / "build_vignettes.py")
vignettes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vignettes)

FILLER = [
    "Lungs are clear to auscultation bilaterally.", "Heart has a regular rate and rhythm without murmur.",
    "Abdomen is soft and non-tender.", "The patient is alert and oriented to person, place and time.",
    "Blood pressure 128/76, pulse 72, temperature 36.8 C.", "Medications were reconciled today.",
    "She works as an accountant and walks daily.", "No known drug allergies.",
    "Follow-up in six weeks or sooner if needed.", "Vertebral body heights are maintained.",
    "The prevertebral soft tissues are within normal limits.", "Mild multilevel degenerative changes.",
    "Bone marrow signal is normal.", "The visualized posterior fossa is unremarkable.",
    "Discussed the risks and benefits of the options.", "Ibuprofen as needed for pain.",
    "Sleep is disturbed by the pain.", "Gait is steady without assistance.",
]
OTHER_CODES = ["I10", "E11.9", "E78.5", "K21.9", "J45.909", "F41.1", "M25.511", "G47.33", "N39.0", "R51.9",
               "M79.7", "Z79.899", "H52.4", "L40.0", "E03.9"]
STUDIES = ["mri-cervical", "ct-cervical", "flexion-extension", "xr-cervical", "mri-cervical", "emg"]


def _clinical_sentences() -> list[str]:
    return json.loads((Path(__file__).parent / "clinical_sentences.json").read_text())


CLINICAL = _clinical_sentences()


def _text(rng: random.Random, size: int) -> str:
    """Sentences from the vignettes (35 %) and ordinary ones, each dated so that no two records
    share a sentence: caches must not make the typical workload look cheaper than it is."""
    parts, length = [], 0
    while length < size:
        sentence = rng.choice(CLINICAL) if rng.random() < 0.35 else rng.choice(FILLER)
        sentence = f"On 2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at {rng.randint(0, 23)}:{rng.randint(0, 59):02d}, {sentence[0].lower()}{sentence[1:]}"
        parts.append(sentence)
        length += len(sentence) + 1
    return " ".join(parts)


def record(resources: int, text_kb: float, seed: int = 7) -> dict:
    """An order-sign request of about `resources` resources and `text_kb` KB of text, every
    resource of it unique to (resources, seed)."""
    rng = random.Random(seed * 1000 + resources)
    tag = f"s{seed}r{resources}"
    reports = max(6, resources * 6 // 40)
    notes = max(3, resources * 3 // 40)
    orders = 1 + resources // 150
    conditions = max(4, (resources - reports - notes - orders - 2) // 2)
    procedures = max(1, resources - reports - notes - orders - 2 - conditions)
    report_text = int(text_kb * 1024 * 0.75 / reports)
    note_text = int(text_kb * 1024 * 0.25 / notes)
    spec = {
        "id": f"bench-{resources}",
        "hook": "order-sign",
        "conditions": [{"code": "M43.10", "text": "Spondylolisthesis"}, {"code": "M54.12"}]
        + [{"code": rng.choice(OTHER_CODES)} for _ in range(conditions - 2)],
        "reports": [{"study": STUDIES[n % len(STUDIES)], "conclusion": _text(rng, 120),
                     "text": f"Accession number {tag}-{n + 1}.\n{_text(rng, report_text)}",
                     "date": f"{_day(rng, 2026)}T{rng.randint(7, 19):02d}:{rng.randint(0, 59):02d}:00-05:00"}
                    for n in range(reports)],
        "notes": [f"Note {tag}-{n + 1}.\n{_text(rng, note_text)}" for n in range(notes)],
        "procedures": [_care_period(rng, rng.choice(["97110", "97012", "95886"])) for _ in range(procedures)],
        "orders": [{"cpt": "72141", "reasons": ["M43.10"], "reason_condition": 0}]
        + [{"cpt": "64405", "reasons": ["M54.12"], "reason_condition": 1} for _ in range(orders - 1)],
    }
    body = vignettes.build(spec)
    body["hookInstance"] = str(uuid.UUID(int=rng.getrandbits(128)))
    _make_unique(body, tag, rng)
    return body


def _day(rng: random.Random, year: int) -> str:
    return f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _care_period(rng: random.Random, cpt: str) -> dict:
    """Conservative care of 8-20 weeks ending in 2026 (the rules count its weeks)."""
    import datetime
    end = datetime.date(2026, 10, 31) - datetime.timedelta(days=rng.randint(0, 200))
    start = end - datetime.timedelta(weeks=rng.randint(8, 20))
    return {"cpt": cpt, "start": start.isoformat(), "end": end.isoformat()}


def _make_unique(body: dict, tag: str, rng: random.Random) -> None:
    """New ids for every resource (and every reference and fullUrl to it) and per-record dates
    for the resources whose content would otherwise be the same in every record."""
    resources = [body["prefetch"]["patient"], body["prefetch"]["encounter"]]
    for key in ("conditions", "procedures", "diagnosticReports", "documentReferences"):
        resources += [e["resource"] for e in body["prefetch"][key]["entry"]]
    resources += [e["resource"] for e in body["context"].get("draftOrders", {}).get("entry", [])]
    renamed = {}
    for resource in resources:
        old = f"{resource['resourceType']}/{resource['id']}"
        resource["id"] = f"{resource['id']}-{tag}"
        renamed[old] = f"{resource['resourceType']}/{resource['id']}"

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and "/" in value:
            for old, new in renamed.items():
                if value == old or value.endswith("/" + old):
                    return value[: len(value) - len(old)] + new
        return value

    body["prefetch"] = walk(body["prefetch"])
    body["context"] = walk(body["context"])
    prefetch = body["prefetch"]
    body["context"]["patientId"] = prefetch["patient"]["id"]
    body["context"]["encounterId"] = prefetch["encounter"]["id"]
    prefetch["patient"]["birthDate"] = _day(rng, rng.randint(1935, 1995))
    prefetch["encounter"]["period"]["start"] = f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(7, 17):02d}:00:00-05:00"
    for entry in prefetch["conditions"]["entry"]:
        entry["resource"]["recordedDate"] = _day(rng, rng.randint(2020, 2026))
    for entry in prefetch["documentReferences"]["entry"]:
        entry["resource"]["date"] = f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(7, 19):02d}:{rng.randint(0, 59):02d}:00-05:00"


def resources_of(body: dict) -> list[dict]:
    """Every resource of a hook request (prefetch and draft orders)."""
    out = []
    for value in body["prefetch"].values():
        if value.get("resourceType") == "Bundle":
            out += [e["resource"] for e in value.get("entry", [])]
        else:
            out.append(value)
    return out + [e["resource"] for e in body["context"].get("draftOrders", {}).get("entry", [])]


class Uniqueness:
    """Counts, over every record given to `add`, the resources already seen in an earlier record
    (same content, or same type and id): bench/run.py reports it for each run (0 but "repeat")."""

    def __init__(self):
        self._seen: set = set()
        self.resources = 0
        self.repeated = 0

    def add(self, body: dict) -> None:
        import hashlib
        keys = set()
        for resource in resources_of(body):
            self.resources += 1
            content = hashlib.blake2b(json.dumps(resource, sort_keys=True).encode(), digest_size=16).digest()
            for key in (content, (resource["resourceType"], resource["id"])):
                if key in self._seen:
                    self.repeated += 1
                    break
            keys.update((content, (resource["resourceType"], resource["id"])))
        self._seen |= keys


def shared_resources(bodies: list[dict]) -> int:
    """How many resources of these records also appear, byte for byte (or by type and id), in
    another of them: 0 for every workload but "repeat"."""
    def keys(resource: dict) -> tuple:
        return json.dumps(resource, sort_keys=True), (resource["resourceType"], resource["id"])

    owners: dict = {}
    for n, body in enumerate(bodies):
        for resource in resources_of(body):
            for key in keys(resource):
                owners.setdefault(key, set()).add(n)
    return sum(1 for body in bodies for resource in resources_of(body)
               if any(len(owners[key]) > 1 for key in keys(resource)))


def count_resources(body: dict) -> int:
    prefetch = body["prefetch"]
    total = sum(len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1 for v in prefetch.values())
    return total + len(body["context"].get("draftOrders", {}).get("entry", []))


def text_bytes(body: dict) -> int:
    import base64
    total = 0
    for key in ("diagnosticReports", "documentReferences"):
        for entry in body["prefetch"][key]["entry"]:
            resource = entry["resource"]
            total += len(resource.get("conclusion", ""))
            for attachment in resource.get("presentedForm", []) + [c["attachment"] for c in resource.get("content", [])]:
                total += len(base64.b64decode(attachment["data"]))
    return total


WORKLOADS = {
    "typical": lambda: record(40, 12),
    "large": lambda: record(300, 60),
    "size-40": lambda: record(40, 12),
    "size-100": lambda: record(100, 30),
    "size-300": lambda: record(300, 60),
}


if __name__ == "__main__":
    for name, make in WORKLOADS.items():
        body = make()
        print(f"{name}: {count_resources(body)} resources, {text_bytes(body) / 1024:.1f} KB text, "
              f"{len(json.dumps(body)) / 1024:.1f} KB JSON")
    sample = [record(40, 12, seed=s) for s in range(1, 21)]
    print(f"resources of 20 typical records found in another of them: {shared_resources(sample)}")
