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
