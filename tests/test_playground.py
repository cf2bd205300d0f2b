"""The playground: a vignette, a pasted request or a FHIR Bundle in, the cards as an EHR shows them."""
from __future__ import annotations

import json
import re

from .support import FIXTURES

VIGNETTE = "vignettes/spl-trauma-fires-nondisplaced-type-ii-dens.json"


def _run(client, **form):
    form.setdefault("service", "spine-coding-encounter-sign")
    return client.post("/playground/run", data=form).get_data(as_text=True)


def test_the_page_lists_the_vignettes_and_services(client):
    page = client.get("/").get_data(as_text=True)
    assert VIGNETTE in page and "spine-coding-order-sign" in page and "<script" not in page


def test_a_vignette_shows_its_card_with_evidence_highlighted(client):
    page = _run(client, vignette=VIGNETTE)
    assert 'class="card critical"' in page
    assert "Acute dens fracture documented: S12.112A replaces M43.11" in page
    assert "<mark>Acute nondisplaced type II dens fracture.</mark>" in page
    assert "<strong>S12.112A</strong>" in page  # the detail rendered from markdown


def test_each_quote_is_shown_once_in_its_paragraph(client):
    page = _run(client, vignette=VIGNETTE)
    blocks = re.findall(r'<div class="evidence">(.*?)</div>', page, re.S)
    assert blocks and all(b.count("<mark") >= 1 for b in blocks)
    marks = re.findall(r"<mark[^>]*>(.*?)</mark>", "".join(blocks), re.S)
    assert len(marks) == len(set(marks))  # each quote once
    report = next(b for b in blocks if "DiagnosticReport/dr-1" in b)
    assert '<p class="paragraph"><mark>Acute nondisplaced type II dens fracture.</mark> ' in report


def _with_report(conclusion: str) -> dict:
    request = json.loads((FIXTURES / VIGNETTE).read_text())
    report = next(e["resource"] for v in request["prefetch"].values() if v.get("resourceType") == "Bundle"
                  for e in v["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    report["conclusion"] = conclusion
    return request


def _report_quotes(client, request) -> list[str]:
    """What the service quotes from the report (the reader decides; these tests only place it)."""
    answer = client.post("/cds-services/spine-coding-encounter-sign", json=request).get_json()
    return [e["text"] for c in answer["cards"] for e in c["extension"]["spine-coding-cds"]["evidence"]
            if e["reference"] == "DiagnosticReport/dr-1"]


def _report_paragraph(page: str) -> str:
    block = next(b for b in re.findall(r'<div class="evidence">(.*?)</div>', page, re.S) if "DiagnosticReport/dr-1" in b)
    return re.search(r'<p class="paragraph">(.*?)</p>', block, re.S).group(1)


def test_a_long_report_shows_only_the_paragraph_of_the_quote(client):
    request = _with_report("EXAM: CT cervical spine <b>stat</b>\nTechnique: axial images.\n\n"
                           "Findings: Acute nondisplaced type II dens fracture. Anterolisthesis of C1\non C2.\n\n"
                           "Impression: see above.")
    quotes = _report_quotes(client, request)
    assert quotes
    paragraph = _report_paragraph(_run(client, request=json.dumps(request)))
    assert paragraph.startswith("Findings: ") and paragraph.endswith("C1<br>on C2.")
    for quote in quotes:
        assert paragraph.count(f"<mark>{quote}</mark>".replace("\n", "<br>")) == 1
    assert "EXAM" not in paragraph and "Impression" not in paragraph and "stat" not in paragraph


def test_the_paragraph_around_a_quote_is_escaped(client):
    request = _with_report("Acute nondisplaced type II dens fracture.\n<script>x()</script> {{ x }} & <b>y</b>")
    quotes = _report_quotes(client, request)
    page = _run(client, request=json.dumps(request))
    evidence = page.split("<h4>Evidence", 1)[1]
    paragraph = _report_paragraph(page)
    assert "<script>" not in evidence and "<b>y" not in evidence and "{{" not in evidence
    assert "&lt;script&gt;" in paragraph and "&amp;" in paragraph and paragraph.count("<mark>") == len(quotes) >= 1


def test_the_suggestion_line_does_not_repeat_the_display(client):
    page = _run(client, vignette=VIGNETTE)
    line = re.search(r'<p class="suggestion">(.*?)</p>', page, re.S).group(1)
    label = re.search(r"<b>(.*?)</b>", line).group(1)
    assert "S12.112A" in label and "Nondisplaced Type II dens fracture" in label
    assert line.count("Nondisplaced Type II dens fracture") == 1  # in the label only
    assert re.search(r"<code>update</code> [^<]*Condition/cond-1[^<]*S12\.112A", line)


def test_a_well_documented_record_is_silent(client):
    page = _run(client, vignette="vignettes/well-documented-record-is-silent.json",
                service="spine-coding-order-sign")
    assert 'id="silence"' in page


def test_accept_and_dismiss_post_real_feedback(client, app):
    page = _run(client, vignette=VIGNETTE)
    card = re.search(r'name="card" value="([^"]+)"', page).group(1)
    suggestion = re.search(r'name="suggestion" value="([^"]+)"', page).group(1)
    accepted = client.post("/playground/feedback", data={"service": "spine-coding-encounter-sign", "card": card,
                                                         "suggestion": suggestion, "outcome": "accepted"})
    assert accepted.status_code == 302 and "done=accepted" in accepted.headers["Location"]
    dismissed = client.post("/playground/feedback", data={"service": "spine-coding-encounter-sign", "card": card,
                                                          "outcome": "overridden", "reason": "already-addressed"})
    assert "done=dismissed" in dismissed.headers["Location"]
    rows = app.extensions["spine_cds"].store.feedback_rows()
    assert [(r["outcome"], r["override_code"]) for r in rows] == [("accepted", None), ("overridden", "already-addressed")]
    assert 'id="done"' in client.get(accepted.headers["Location"]).get_data(as_text=True)


def test_a_pasted_fhir_bundle_becomes_a_hook_request(client):
    request = json.loads((FIXTURES / VIGNETTE).read_text())
    resources = [e["resource"] for v in request["prefetch"].values() if v.get("resourceType") == "Bundle"
                 for e in v["entry"]] + [request["prefetch"]["patient"], request["prefetch"]["encounter"]]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    page = _run(client, request=json.dumps(bundle))
    assert "S12.112A replaces M43.11" in page


def test_errors_are_shown_not_thrown(client):
    assert 'id="error"' in _run(client, request="{not json")
    assert "required data" in _run(client, request=json.dumps({"context": {"userId": "Practitioner/x",
                                                                          "patientId": "p", "encounterId": "e"}}))
    assert 'id="error"' in _run(client)


def test_the_playground_is_off_when_authentication_is_on(make_app, tmp_path):
    (tmp_path / "k.json").write_text('{"keys": []}')
    settings = {"trusted_issuers": [{"iss": "https://ehr.test", "jwks_file": str(tmp_path / "k.json")}],
                "public_base_url": "https://cds.test"}
    assert make_app(**settings).test_client().get("/").status_code == 404
    # turned on, it still needs a token (tests/test_auth_gates.py)
    assert make_app(playground=True, **settings).test_client().get("/").status_code == 401


# ------------------------------------------------------------ the picker follows the vignette (issue 12)
def _vignette_files() -> dict[str, str]:
    """Every hook request under fhir_fixtures/, read here (not through the playground), with its hook."""
    out = {}
    for path in sorted(FIXTURES.glob("**/*.json")):
        body = json.loads(path.read_text())
        if isinstance(body, dict) and body.get("hook") in ("order-sign", "encounter-sign", "encounter-discharge"):
            out[path.relative_to(FIXTURES).as_posix()] = body["hook"]
    return out


def test_the_service_picker_defaults_to_the_requests_own_hook(client):
    page = client.get("/").get_data(as_text=True)
    picker = re.search(r'<select name="service">(.*?)</select>', page, re.S).group(1)
    options = re.findall(r'<option value="([^"]*)"\s*(selected)?', picker)
    assert options[0] == ("", "selected") and all(not selected for _, selected in options[1:])
    # each vignette names its hook in the picker
    for name, hook in _vignette_files().items():
        assert f'<option value="{name}" >{name} ({hook})</option>' in page


def test_every_vignette_runs_from_the_playground_with_the_default_picker(client):
    """As a first-time user does: choose a vignette, leave the service as it is, run."""
    page = client.get("/").get_data(as_text=True)
    default = re.search(r'<select name="service">\s*<option value="([^"]*)"', page).group(1)
    vignettes = _vignette_files()
    assert len(vignettes) >= 100 and set(vignettes.values()) == {"order-sign", "encounter-sign", "encounter-discharge"}
    for name, hook in vignettes.items():
        result = _run(client, vignette=name, service=default)
        assert 'id="error"' not in result, (name, re.search(r'id="error">(.*?)</p>', result, re.S).group(1))
        assert 'id="result"' in result, name
        ran = re.search(r'<p id="ran-service">Run through <code>([^<]+)</code> \(([^)]+)\)', result)
        assert ran and ran.group(2) == hook and ran.group(1) == f"spine-coding-{hook}", name
        # the feedback buttons name the service that issued the cards
        assert set(re.findall(r'name="service" value="([^"]*)"', result)) <= {ran.group(1)}, name


def test_a_form_without_a_service_field_follows_the_vignette(client):
    result = client.post("/playground/run", data={"vignette": "order-sign_c1-c2-slip_coded-m43.10.json"})
    assert "Run through <code>spine-coding-order-sign</code>" in result.get_data(as_text=True)


def test_a_service_chosen_on_purpose_against_the_vignettes_hook_is_a_mismatch_error(client, app, monkeypatch):
    from service.api import playground

    calls = []
    real = playground.answer_hook
    monkeypatch.setattr(playground, "answer_hook", lambda *a, **k: calls.append(1) or real(*a, **k))
    page = _run(client, vignette="order-sign_c1-c2-slip_coded-m43.10.json", service="spine-coding-encounter-sign")
    error = re.search(r'id="error">(.*?)</p>', page, re.S).group(1)
    assert "hook mismatch" in error and "spine-coding-order-sign" in error and "encounter-sign" in error
    assert not calls and 'id="result"' not in page  # not run, not re-hooked
    # the form keeps what was chosen
    assert '<option value="spine-coding-encounter-sign" selected>' in page
    assert '<option value="order-sign_c1-c2-slip_coded-m43.10.json" selected>' in page
    # the matching service, chosen on purpose, runs
    assert 'id="result"' in _run(client, vignette="order-sign_c1-c2-slip_coded-m43.10.json",
                                 service="spine-coding-order-sign")


def test_a_pasted_request_follows_its_hook_and_a_bundle_needs_a_service(client):
    request = json.loads((FIXTURES / VIGNETTE).read_text())
    assert "S12.112A replaces M43.11" in _run(client, request=json.dumps(request), service="")
    resources = [e["resource"] for v in request["prefetch"].values() if v.get("resourceType") == "Bundle"
                 for e in v["entry"]] + [request["prefetch"]["patient"], request["prefetch"]["encounter"]]
    bundle = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]})
    error = re.search(r'id="error">(.*?)</p>', _run(client, request=bundle, service=""), re.S).group(1)
    assert "Bundle" in error and "choose" in error
    unknown = dict(request, hook="appointment-book")  # a hook no service answers
    error = re.search(r'id="error">(.*?)</p>', _run(client, request=json.dumps(unknown), service=""), re.S).group(1)
    assert "appointment-book" in error


def test_the_picker_lists_only_hook_requests(client, tmp_path, monkeypatch):
    from service.api import playground

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "request.json").write_text(json.dumps({"hook": "encounter-discharge", "context": {}}))
    (tmp_path / "bundle.json").write_text(json.dumps({"resourceType": "Bundle", "entry": []}))
    (tmp_path / "manifest.json").write_text(json.dumps({"transactionTime": "2026-01-01T00:00:00Z", "output": []}))
    (tmp_path / "other-hook.json").write_text(json.dumps({"hook": "appointment-book"}))  # no service answers it
    (tmp_path / "broken.json").write_text("{")
    monkeypatch.setattr(playground, "FIXTURES", tmp_path)
    assert playground.vignettes() == {"a/request.json": "encounter-discharge"}
    assert _run(client, vignette="bundle.json", service="").count("choose a vignette") == 1


def test_playground_cards_are_recorded_as_playground_traffic(client, app):
    store = app.extensions["spine_cds"].store
    _run(client, vignette=VIGNETTE, service="")
    client.post("/cds-services/spine-coding-encounter-sign",
                json=json.loads((FIXTURES / VIGNETTE).read_text())).close()  # recorded once the answer is sent
    origins = sorted(r["origin"] for r in store.issued_rows())
    assert origins == ["ehr", "playground"]
