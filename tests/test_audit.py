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


# ------------------------------------------------------------------ the engines (issue 13)
def _without_run(summary: dict) -> dict:
    """The summary less what says how it was run (engine, workers, time)."""
    return {k: v for k, v in summary.items() if k not in ("engine", "workers", "seconds")}


def _page(out) -> str:
    import re

    return re.sub(r'<p class="run">.*?</p>', "", (out / "audit.html").read_text())


def _outputs(out) -> dict[str, bytes]:
    files = [out / "audit.csv"] if (out / "audit.csv").exists() else sorted((out / "audit").glob("part-*.csv"))
    return {f.relative_to(out).as_posix(): f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def cluster():
    """A Dask cluster of two forked worker processes for the module's tests, reached by its address as
    `--scheduler` would reach a remote one (each worker loads its runtime once, RuntimePlugin)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                             silence_logs=50, host="127.0.0.1")
    yield local.scheduler_address
    local.close()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """300 patients of bench/gen_export.py (a few hundred of the vignettes' and charts' cards among them)."""
    from bench.gen_export import generate

    folder = tmp_path_factory.mktemp("generated") / "export"
    generate(folder, patients=300, seed=5)
    return folder


def _both(path, tmp_path, cluster, name, **options):
    import io

    from service.audit import run

    runs = {}
    for engine in ("local", "dask"):
        out = tmp_path / f"{name}-{engine}"
        stderr = io.StringIO()
        scheduler = cluster if engine == "dask" else None
        summary = run(path, out, workers=2, progress=stderr, engine=engine, scheduler=scheduler, **options)
        runs[engine] = (summary, out, stderr.getvalue())
    return runs


def test_both_engines_give_the_same_cards_on_the_fixtures_export(tmp_path, cluster):
    import re

    runs = _both(FIXTURES / "export", tmp_path, cluster, "fixtures")
    (local, local_out, local_err), (dask, dask_out, dask_err) = runs["local"], runs["dask"]
    assert local["engine"] == "local" and dask["engine"] == "dask" and dask["workers"] == 2
    assert _without_run(local) == _without_run(dask) and local["cards"] > 0 and local["unreadable"] == 0
    assert _outputs(local_out) == _outputs(dask_out) and list(_outputs(local_out)) == ["audit.csv"]
    assert _page(local_out) == _page(dask_out) and "Run by the dask engine on 2 workers" in (dask_out / "audit.html").read_text()
    assert "audit: patients 6/6 (100 %)" in local_err
    assert re.search(r"audit: partitions (\d+)/\1 \(100 %\), patients 6/6, cards 4, [0-9.]+ patients/s", dask_err)
    rows = list(csv.reader(open(local_out / "audit.csv")))
    assert rows[1:] == sorted(rows[1:], key=lambda r: (r[0], r[1], r[2]))
    text = (local_out / "audit.csv").read_text()
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-", text)  # no uuid: the same bytes on every run


def test_both_engines_give_the_same_cards_on_a_generated_export_in_part_files(generated, tmp_path, cluster):
    runs = _both(generated, tmp_path, cluster, "generated", partitioned=True, part_rows=10)
    (local, local_out, _), (dask, dask_out, _) = runs["local"], runs["dask"]
    assert local["patients"] == 300 and local["cards"] > 20 and local["unreadable"] == 0
    assert _without_run(local) == _without_run(dask)
    parts = _outputs(local_out)
    assert parts == _outputs(dask_out) and len(parts) == local["csv_parts"] == -(-local["rows"] // 10)
    assert all(p.startswith(b"patient,encounter,rule,") for p in parts.values())  # each part has the header
    assert not (local_out / "audit.csv").exists() and "audit/part-00000.csv" in _page(local_out)
    assert local["csv"] == "audit/part-*.csv" and len(local["by_rule"]) >= 5


def test_the_dask_engine_reads_a_url(tmp_path, cluster):
    from service.audit import run

    local = run(FIXTURES / "export", tmp_path / "local", workers=1, progress=None)
    url = run((FIXTURES / "export").resolve().as_uri(), tmp_path / "url", workers=2, progress=None, engine="dask",
              scheduler=cluster)
    assert _without_run(url) == _without_run(local)
    assert _outputs(tmp_path / "url") == _outputs(tmp_path / "local")


def test_what_cannot_be_read_is_reported_alike_by_both_engines(tmp_path, cluster):
    """An unparseable line, a line that is not an object, a patient whose evaluation raises: the same
    report from both engines (file:line, with Dask's blocks small enough that the lines are counted
    across several), and the other patients' cards."""
    folder = _broken_export(tmp_path)
    with open(folder / "all.ndjson", "a") as fh:
        fh.write("[1, 2]\n\n" + json.dumps(_resources(FIRES[1], "p9", "e9")[0]) + "\n")
    from service.audit import run

    local = run(folder, tmp_path / "local", workers=2, progress=None)
    dask = run(folder, tmp_path / "dask", workers=2, progress=None, engine="dask", scheduler=cluster, blocksize=300)
    lines = len((folder / "all.ndjson").read_bytes().splitlines())
    assert local["unreadable_patients"] == [
        {"patient": "all.ndjson:4", "stage": "reading", "error": "unparseable line"},
        {"patient": f"all.ndjson:{lines - 2}", "stage": "reading", "error": "not an object"},
        {"patient": "p1", "stage": "evaluating", "error": "AttributeError"}]
    assert _without_run(dask) == _without_run(local)
    assert _outputs(tmp_path / "dask") == _outputs(tmp_path / "local")
    assert [(r["patient"], r["rule"]) for r in csv.DictReader(open(tmp_path / "dask" / "audit.csv"))] == [
        ("p0", "SPL-TRAUMA")]
    assert "not an object" in _page(tmp_path / "dask") and "[1, 2]" not in _page(tmp_path / "dask")


def _dies_on(monkeypatch, marked: str) -> None:
    """The per-patient function kills its own process (as a segfault would) on the marked patient."""
    import os
    import signal

    import service.audit.patient as one

    real = one.audit_patient

    def audit_patient(resources):
        if any(one.patient_of(r) == marked for r in resources):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(resources)

    monkeypatch.setattr(one, "audit_patient", audit_patient)  # forked workers inherit it


class _Deadline:
    """Fails the test (instead of hanging it) if the audit has not returned within `seconds`."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        import signal

        def expired(*_):
            raise TimeoutError("the audit hung on a dead worker")
        self.old = signal.signal(signal.SIGALRM, expired)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        import signal

        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def test_a_worker_that_dies_costs_the_local_engine_only_its_patient(tmp_path, monkeypatch):
    from service.audit import run

    before = run(FIXTURES / "export", tmp_path / "before", workers=2, progress=None)
    _dies_on(monkeypatch, "exp-pt-3")
    with _Deadline(120):
        after = run(FIXTURES / "export", tmp_path / "after", workers=2, progress=None)
    assert after["unreadable_patients"] == [{"patient": "exp-pt-3", "stage": "evaluating", "error": "worker died"}]
    assert after["patients"] == before["patients"] == 6
    rows = list(csv.DictReader(open(tmp_path / "before" / "audit.csv")))
    assert [r for r in rows if r["patient"] != "exp-pt-3"] == list(csv.DictReader(open(tmp_path / "after" / "audit.csv")))
    assert any(r["patient"] == "exp-pt-3" for r in rows)  # it had a card: the loss is visible
    assert "worker died" in (tmp_path / "after" / "audit.html").read_text()


def test_a_worker_that_dies_costs_the_dask_engine_only_its_partition(tmp_path, monkeypatch):
    """A local cluster (forked after the monkeypatch): the task that killed its worker twice ends in
    KilledWorker, its partition's patients are reported, the other partitions' cards are all there."""
    from service.audit import run

    before = run(FIXTURES / "export", tmp_path / "before", workers=1, progress=None)
    _dies_on(monkeypatch, "exp-pt-3")
    with _Deadline(150):
        after = run(FIXTURES / "export", tmp_path / "after", workers=2, progress=None, engine="dask",
                    allowed_failures=1, npartitions=3)
    lost = {u["patient"] for u in after["unreadable_patients"]}
    assert "exp-pt-3" in lost and len(lost) < 6
    assert {u["error"] for u in after["unreadable_patients"]} == {"worker died"}
    rows = list(csv.DictReader(open(tmp_path / "before" / "audit.csv")))
    assert [r for r in rows if r["patient"] not in lost] == list(csv.DictReader(open(tmp_path / "after" / "audit.csv")))
    assert after["patients"] == 6
