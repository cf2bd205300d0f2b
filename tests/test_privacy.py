"""Logs never carry clinical text, JWTs or access tokens, at any log level."""
from __future__ import annotations

import base64
import logging

import pytest

from .support import fresh, load_fixture

SECRET_PHRASES = ["ZEBRA-MYELOPATHY-PHRASE", "QUOKKA-NOTE-PHRASE", "PELICAN-CONDITION-TEXT"]
ACCESS_TOKEN = "TOKEN-DO-NOT-LOG-8f7e6d"


def _request_with_secrets():
    body = fresh(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json"))
    prefetch = body["prefetch"]
    prefetch["diagnosticReports"]["entry"][0]["resource"]["conclusion"] = SECRET_PHRASES[0]
    note = f"<p>{SECRET_PHRASES[1]}</p>"
    prefetch["documentReferences"]["entry"][0]["resource"]["content"][0]["attachment"]["data"] = \
        base64.b64encode(note.encode()).decode()
    prefetch["conditions"]["entry"][0]["resource"]["code"]["text"] = SECRET_PHRASES[2]
    # an invalid resource whose bad value is clinical text: pydantic would quote it
    prefetch["conditions"]["entry"].append({"resource": {
        "resourceType": "Condition", "id": "bad", "subject": {"reference": "Patient/pt-1001"},
        "onsetDateTime": SECRET_PHRASES[2]}})
    body["fhirServer"] = "http://127.0.0.1:9/fhir"
    body["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read", "subject": "spine-cds"}
    return body


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR"])
def test_no_clinical_text_or_token_in_logs(make_app, caplog, capfd, level):
    client = make_app(log_level=level, fhir_allowlist=["http://127.0.0.1:9/fhir"]).test_client()
    with caplog.at_level(getattr(logging, level)):
        ok = client.post("/cds-services/spine-coding-order-sign", json=_request_with_secrets())
        del_body = _request_with_secrets()
        del del_body["prefetch"]["conditions"]  # forces a fetch from a closed port → 412
        failed = client.post("/cds-services/spine-coding-order-sign", json=del_body)
    assert ok.status_code == 200 and failed.status_code == 412
    logged = caplog.text + "".join(capfd.readouterr())
    if level in ("DEBUG", "INFO"):
        assert "hookInstance=" in logged  # the log is there, just clean
    for secret in SECRET_PHRASES + [ACCESS_TOKEN]:
        assert secret not in logged


# ------------------------------------------------------------- every vignette, every level
import json as _json  # noqa: E402

from service.services import service_for_hook  # noqa: E402

from .served import Gunicorn  # noqa: E402
from .support import FIXTURES  # noqa: E402

CANARY = "QUOKKA-CANARY-7731"


def _with_canaries(body: dict, token: str | None = None) -> dict:
    """Every text of the record carries the canary phrase, and an invalid resource quotes it."""
    prefetch = body.get("prefetch", {})
    for entry in (prefetch.get("diagnosticReports") or {}).get("entry", []):
        entry["resource"]["conclusion"] = entry["resource"].get("conclusion", "") + f" {CANARY} anterolisthesis."
    for entry in (prefetch.get("documentReferences") or {}).get("entry", []):
        attachment = entry["resource"]["content"][0]["attachment"]
        text = base64.b64decode(attachment["data"]).decode() + f" {CANARY} myelopathy."
        attachment["data"] = base64.b64encode(text.encode()).decode()
    conditions = (prefetch.get("conditions") or {}).get("entry", [])
    for entry in conditions:
        entry["resource"].setdefault("code", {})["text"] = f"{CANARY} C1-C2"
    if "conditions" in prefetch:
        conditions.append({"resource": {"resourceType": "Condition", "id": "bad",
                                        "subject": {"reference": "Patient/vp-1"}, "onsetDateTime": CANARY}})
    if token:
        body["fhirServer"] = "http://127.0.0.1:9/fhir"
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 60,
                                     "scope": "patient/*.read", "subject": "cds"}
    return body


VIGNETTE_FILES = sorted((FIXTURES / "vignettes").glob("*.json"))


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR"])
def test_no_canary_in_logs_over_every_vignette(make_app, caplog, capfd, level):
    app = make_app(log_level=level, fhir_allowlist=["http://127.0.0.1:9/fhir"])
    client = app.test_client()
    with caplog.at_level(getattr(logging, level)):
        for path in VIGNETTE_FILES:
            body = _with_canaries(_json.loads(path.read_text()), token=ACCESS_TOKEN)
            service = service_for_hook(body["hook"]).id
            response = client.post(f"/cds-services/{service}", json=body)
            assert response.status_code in (200, 412)
            response.close()
    logged = caplog.text + "".join(capfd.readouterr())
    assert CANARY not in logged and ACCESS_TOKEN not in logged


@pytest.mark.served
def test_no_canary_or_token_in_the_served_log_at_debug(tmp_path):
    from .test_jwt import Client

    keys = Client(iss="https://ehr.test")
    (tmp_path / "jwks.json").write_text(_json.dumps(keys.jwks))
    server = Gunicorn(tmp_path, env={
        "SPINE_CDS_LOG_LEVEL": "DEBUG", "SPINE_CDS_PUBLIC_BASE_URL": "http://cds.test",
        "SPINE_CDS_TRUSTED_ISSUERS": _json.dumps([{"iss": "https://ehr.test", "jwks_file": str(tmp_path / "jwks.json")}]),
        "SPINE_CDS_FHIR_ALLOWLIST": "http://127.0.0.1:9/fhir"})
    keys.base = "http://cds.test"
    tokens = []
    try:
        import requests

        for path in VIGNETTE_FILES[:20]:
            body = _with_canaries(_json.loads(path.read_text()), token=ACCESS_TOKEN)
            service = service_for_hook(body["hook"]).id
            token = keys.token(aud=f"http://cds.test/cds-services/{service}")
            tokens.append(token)
            response = requests.post(f"{server.url}/cds-services/{service}", json=body,
                                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert response.status_code in (200, 412)
            # and the same token again, on discovery: refused, the reason logged without the token
            assert requests.get(f"{server.url}/cds-services", headers={"Authorization": f"Bearer {token}"},
                                timeout=10).status_code == 401
    finally:
        server.stop()
    log = server.log_text()
    assert "hookInstance=" in log and "DEBUG" in log and "refused a request to /cds-services" in log
    assert CANARY not in log and ACCESS_TOKEN not in log
    assert not any(token in log or token.split(".")[1] in log for token in tokens)
