"""Fetching from the EHR's FHIR server, over real HTTP on loopback: no mocking of requests.

A served instance of the app calls a fake FHIR server; each test sets what the FHIR server
answers and asserts what the service asked for and how it answered the EHR.
"""
from __future__ import annotations

import base64
import time

import pytest
import requests

from .support import fresh, load_fixture, searchset

pytestmark = pytest.mark.served

PATIENT = "pt-1001"
TOKEN = "opaque-access-token-123"
SERVICE = "/cds-services/spine-coding-order-sign"


def _bare_request(fhir_base: str, with_token: bool = True) -> dict:
    body = fresh(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json"))
    body.pop("prefetch")
    body["fhirServer"] = fhir_base
    if with_token:
        body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "spine-cds"}
    return body


def _route_record(fhir, conditions=None):
    prefetch = load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")["prefetch"]
    fhir.route(f"Patient/{PATIENT}", prefetch["patient"])
    fhir.route("Encounter/enc-2001", prefetch["encounter"])
    fhir.route("Condition", conditions if conditions is not None else prefetch["conditions"])
    fhir.route("Procedure", prefetch["procedures"])
    fhir.route("DiagnosticReport", prefetch["diagnosticReports"])
    fhir.route("DocumentReference", prefetch["documentReferences"])


@pytest.fixture
def served(make_app, serve, fhir_server):
    def start(**overrides):
        settings = {"fhir_allowlist": [fhir_server.base], "hook_deadline": 2.0,
                    "fhir_read_timeout": 0.5, "fhir_connect_timeout": 0.5}
        settings.update(overrides)
        return serve(make_app(**settings))
    return start


def _post(instance, body, timeout=10):
    return requests.post(instance.url + SERVICE, json=body, timeout=timeout)


def test_absent_prefetch_is_fetched_with_the_access_token(served, fhir_server):
    _route_record(fhir_server)
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 200, response.text
    assert "extension" not in response.json()
    paths = fhir_server.paths()
    assert f"/fhir/Condition?patient={PATIENT}" in paths
    assert f"/fhir/Patient/{PATIENT}" in paths
    assert "/fhir/Encounter/enc-2001" in paths
    assert f"/fhir/DocumentReference?patient={PATIENT}" in paths
    assert {r["authorization"] for r in fhir_server.requests} == {f"Bearer {TOKEN}"}


def test_open_fhir_server_without_authorization_is_read_without_a_token(served, fhir_server):
    _route_record(fhir_server)
    response = _post(served(), _bare_request(fhir_server.base, with_token=False))
    assert response.status_code == 200
    assert {r["authorization"] for r in fhir_server.requests} == {None}


def test_only_missing_keys_are_fetched(served, fhir_server):
    _route_record(fhir_server)
    body = _bare_request(fhir_server.base)
    full = load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")["prefetch"]
    body["prefetch"] = {k: v for k, v in full.items() if k != "diagnosticReports"}
    assert _post(served(), body).status_code == 200
    assert fhir_server.paths() == [f"/fhir/DiagnosticReport?patient={PATIENT}"]


def test_operation_outcome_prefetch_is_fetched_again(served, fhir_server):
    _route_record(fhir_server)
    body = _bare_request(fhir_server.base)
    body["prefetch"] = dict(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")["prefetch"])
    body["prefetch"]["conditions"] = {"resourceType": "OperationOutcome",
                                      "issue": [{"severity": "error", "code": "timeout"}]}
    assert _post(served(), body).status_code == 200
    assert fhir_server.paths() == [f"/fhir/Condition?patient={PATIENT}"]


def test_pages_are_followed(served, fhir_server):
    page2 = f"{fhir_server.base}/Condition-page-2"
    _route_record(fhir_server, conditions=searchset(next_url=page2))
    fhir_server.route("Condition-page-2", load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")
                      ["prefetch"]["conditions"])
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 200
    assert "/fhir/Condition-page-2" in fhir_server.paths()


def test_prefetched_page_with_next_link_is_completed_from_the_server(served, fhir_server):
    _route_record(fhir_server)
    body = _bare_request(fhir_server.base)
    body["prefetch"] = dict(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")["prefetch"])
    body["prefetch"]["diagnosticReports"] = dict(body["prefetch"]["diagnosticReports"],
                                                 link=[{"relation": "next", "url": "DiagnosticReport?page=2"}])
    fhir_server.route("DiagnosticReport", searchset())
    response = _post(served(), body)
    assert response.status_code == 200 and "extension" not in response.json()
    assert fhir_server.paths() == ["/fhir/DiagnosticReport?page=2"]


def test_endless_next_links_stop_at_the_page_limit(served, fhir_server):
    fhir_server.route("Condition", searchset(next_url=f"{fhir_server.base}/Condition"))
    response = _post(served(fhir_max_pages=4), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert "more than 4 pages" in response.json()["issue"][0]["diagnostics"]
    assert fhir_server.paths().count(f"/fhir/Condition?patient={PATIENT}") == 1
    assert len([p for p in fhir_server.paths() if p.startswith("/fhir/Condition")]) == 4


def test_next_link_to_another_host_is_refused(served, fhir_server):
    _route_record(fhir_server, conditions=searchset(next_url="http://127.0.0.2:9/fhir/Condition?page=2"))
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert "outside the FHIR server" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("status,reason", [(500, "server answered 500"), (401, "not authorized (401)"),
                                           (403, "not authorized (403)")])
def test_required_data_failing_is_412_with_the_reason(served, fhir_server, status, reason):
    _route_record(fhir_server)
    fhir_server.route("Condition", {"resourceType": "OperationOutcome", "issue": []}, status=status)
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert response.headers["Content-Type"].startswith("application/json")
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["prefetch.conditions"] and reason in issue["diagnostics"]
    assert TOKEN not in response.text


def test_optional_data_failing_degrades_and_says_so(served, fhir_server):
    _route_record(fhir_server)
    fhir_server.route("DiagnosticReport", {"resourceType": "OperationOutcome", "issue": []}, status=500)
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 200
    assert response.json()["extension"]["spine-coding-cds"]["unavailable"] == [
        {"prefetch": "diagnosticReports", "reason": "server answered 500"}]


def test_redirect_is_not_followed(served, fhir_server):
    _route_record(fhir_server)
    fhir_server.route("Condition", b"", status=302, headers={"Location": "http://127.0.0.2:9/steal"})
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert "redirect" in response.json()["issue"][0]["diagnostics"]


def test_invalid_json_from_the_server_is_412(served, fhir_server):
    _route_record(fhir_server)
    fhir_server.route("Condition", b"{not json")
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert "invalid JSON" in response.json()["issue"][0]["diagnostics"]


def test_response_over_the_byte_budget_is_refused(served, fhir_server):
    _route_record(fhir_server)
    fhir_server.route("Condition", searchset(*[{"resourceType": "Condition", "id": f"c{n}",
                                                 "subject": {"reference": f"Patient/{PATIENT}"},
                                                 "note": [{"text": "x" * 1000}]} for n in range(200)]))
    response = _post(served(fhir_max_bytes=50_000), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert "byte budget" in response.json()["issue"][0]["diagnostics"]


def test_slow_server_is_cut_by_the_timeout_within_the_deadline(served, fhir_server):
    _route_record(fhir_server)
    fhir_server.route("Condition", searchset(), delay=3.0)
    started = time.monotonic()
    response = _post(served(fhir_read_timeout=0.3, hook_deadline=1.0), _bare_request(fhir_server.base))
    elapsed = time.monotonic() - started
    assert response.status_code == 412
    assert "timeout" in response.json()["issue"][0]["diagnostics"]
    assert elapsed < 2.0


def test_server_off_the_allowlist_is_never_contacted(served, fhir_server):
    _route_record(fhir_server)
    response = _post(served(fhir_allowlist=["https://ehr.example.org/fhir"]), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert fhir_server.requests == []


def test_no_allowlist_means_no_fetching(served, fhir_server):
    _route_record(fhir_server)
    response = _post(served(fhir_allowlist=[]), _bare_request(fhir_server.base))
    assert response.status_code == 412
    assert fhir_server.requests == []


def test_closed_port_is_412(served, fhir_server):
    dead = "http://127.0.0.1:9/fhir"
    response = _post(served(fhir_allowlist=[dead]), _bare_request(dead))
    assert response.status_code == 412
    assert "connection failed" in response.json()["issue"][0]["diagnostics"]


def test_attachment_url_is_read_from_binary(served, fhir_server):
    _route_record(fhir_server)
    note = "Assessment: C1-C2 radiculopathy with occipital scalp numbness."
    fhir_server.route("Binary/note-1", {"resourceType": "Binary", "contentType": "text/plain",
                                        "data": base64.b64encode(note.encode()).decode()})
    fhir_server.route("DocumentReference", searchset({
        "resourceType": "DocumentReference", "id": "doc-url", "status": "current",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/note-1"}}]}))
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 200
    assert "extension" not in response.json()
    binary = [r for r in fhir_server.requests if r["path"] == "/fhir/Binary/note-1"]
    assert binary and binary[0]["authorization"] == f"Bearer {TOKEN}"


def test_missing_resource_on_read_is_no_data(served, fhir_server):
    _route_record(fhir_server)
    fhir_server.routes.pop(f"/fhir/Patient/{PATIENT}")  # the fake answers 404
    response = _post(served(), _bare_request(fhir_server.base))
    assert response.status_code == 200
    assert "extension" not in response.json()
