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
    assert "<code>update</code> Condition: S12.112A Nondisplaced Type II dens fracture" in page


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
    assert make_app(playground=True, **settings).test_client().get("/").status_code == 200
