"""With authentication on: the playground needs a token, and the start-up warm-up still warms.

Issue 11: with a trusted issuer configured, `SPINE_CDS_PLAYGROUND=true` ran the whole pipeline for
anyone without a token, and the warm-up's calls through the (authenticated) hook route were all
refused, so nothing was warmed.
"""
from __future__ import annotations

import json

import pytest

from service import cli
from service.api import playground
from service.services import SERVICES

from .test_jwt import BASE, ISS, Client

REFUSAL = {"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": "login", "diagnostics": "unauthorized"}]}
VIGNETTE = "order-sign_c1-c2-slip_coded-m43.10.json"


@pytest.fixture
def ehr():
    return Client()


@pytest.fixture
def secured_app(make_app, tmp_path, ehr):
    (tmp_path / "jwks.json").write_text(json.dumps(ehr.jwks))

    def build(**overrides):
        settings = {"trusted_issuers": [{"iss": ISS, "jwks_file": str(tmp_path / "jwks.json")}],
                    "public_base_url": BASE}
        settings.update(overrides)
        return make_app(**settings)

    return build


@pytest.fixture
def pipeline_calls(monkeypatch):
    """Every run of the pipeline from the playground, counted."""
    calls = []
    real = playground.answer_hook

    def counted(*args, **kwargs):
        calls.append(args[1].id)
        return real(*args, **kwargs)

    monkeypatch.setattr(playground, "answer_hook", counted)
    return calls


def _run_form():
    return {"service": "spine-coding-order-sign", "vignette": VIGNETTE}


def _feedback_form():
    return {"service": "spine-coding-order-sign", "card": "00000000-0000-4000-8000-000000000001",
            "outcome": "overridden", "reason": "x"}


# ------------------------------------------------------------------------ the playground
def test_with_authentication_on_the_playground_is_off_by_default(secured_app, pipeline_calls):
    client = secured_app().test_client()
    for response in (client.get("/"), client.post("/playground/run", data=_run_form()),
                     client.post("/playground/feedback", data=_feedback_form())):
        assert response.status_code == 404
        assert response.get_json()["resourceType"] == "OperationOutcome"
    assert pipeline_calls == []


@pytest.mark.parametrize("authorization", [None, "", "Bearer not.a.token", "Basic dXNlcjpwYXNz"])
def test_turned_on_with_authentication_on_the_playground_refuses_callers_without_a_valid_token(
        secured_app, pipeline_calls, authorization):
    app = secured_app(playground=True)
    client = app.test_client()
    headers = {} if authorization is None else {"Authorization": authorization}
    for response in (client.get("/", headers=headers),
                     client.post("/playground/run", data=_run_form(), headers=headers),
                     client.post("/playground/feedback", data=_feedback_form(), headers=headers)):
        assert response.status_code == 401
        assert response.get_json() == REFUSAL  # the hook endpoints' own refusal, JSON, never a page
    assert pipeline_calls == []  # the pipeline never ran
    store = app.extensions["spine_cds"].store
    assert store.feedback_rows() == [] and store.issued_rows() == []


def test_turned_on_with_authentication_on_the_playground_serves_callers_with_a_token(
        secured_app, pipeline_calls, ehr):
    client = secured_app(playground=True).test_client()
    page = client.get("/", headers={"Authorization": f"Bearer {ehr.token(aud=BASE)}"})
    assert page.status_code == 200 and "playground" in page.get_data(as_text=True)
    ran = client.post("/playground/run", data=_run_form(),
                      headers={"Authorization": f"Bearer {ehr.token(aud=BASE + '/playground/run')}"})
    assert ran.status_code == 200 and 'id="result"' in ran.get_data(as_text=True)
    assert pipeline_calls == ["spine-coding-order-sign"]
    # a token for another endpoint is not one for the playground
    other = client.post("/playground/run", data=_run_form(),
                        headers={"Authorization": f"Bearer {ehr.token(aud=BASE + '/cds-services')}"})
    assert other.status_code == 401 and pipeline_calls == ["spine-coding-order-sign"]


def test_with_authentication_off_the_playground_needs_no_token(make_app, pipeline_calls):
    client = make_app().test_client()
    assert client.get("/").status_code == 200
    assert 'id="result"' in client.post("/playground/run", data=_run_form()).get_data(as_text=True)
    assert pipeline_calls == ["spine-coding-order-sign"]


@pytest.mark.parametrize("env,says", [
    ({}, "open to anyone"),
    ({"SPINE_CDS_TRUSTED_ISSUERS": "ISSUERS"}, "off (404)"),
    ({"SPINE_CDS_TRUSTED_ISSUERS": "ISSUERS", "SPINE_CDS_PLAYGROUND": "true"}, "valid bearer JWT only"),
])
def test_check_config_says_what_the_playground_does(monkeypatch, capsys, tmp_path, ehr, env, says):
    (tmp_path / "jwks.json").write_text(json.dumps(ehr.jwks))
    for name in [n for n in __import__("os").environ if n.startswith("SPINE_CDS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPINE_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'c.sqlite3'}")
    monkeypatch.setenv("SPINE_CDS_PUBLIC_BASE_URL", BASE)
    issuers = json.dumps([{"iss": ISS, "jwks_file": str(tmp_path / "jwks.json")}])
    for name, value in env.items():
        monkeypatch.setenv(name, issuers if value == "ISSUERS" else value)
    assert cli.main(["check-config"]) == 0
    assert says in json.loads(capsys.readouterr().out)["playground_access"]


# --------------------------------------------------------------------------- the warm-up
def test_with_authentication_on_the_warm_up_runs_every_hook_and_records_nothing(secured_app, monkeypatch):
    app = secured_app()
    runtime = app.extensions["spine_cds"]
    # the route the old warm-up used refuses a call without a token
    assert app.test_client().post("/cds-services/spine-coding-order-sign", json={}).status_code == 401
    sources_before = len(runtime.reader._sources)
    outcome = cli.warm_up(app)
    assert set(outcome) == set(SERVICES)
    assert all(isinstance(n, int) for n in outcome.values()), outcome  # every call ran to the end
    assert len(runtime.reader._sources) > sources_before  # the reader's cache is warm
    store = runtime.store
    assert store.issued_rows() == [] and store.count("hook_timeouts") == 0  # nothing recorded


def test_the_warm_up_is_not_cut_by_the_clinicians_deadline(secured_app):
    app = secured_app(hook_deadline=0.0001)  # any real call would stop at the deadline
    outcome = cli.warm_up(app)
    assert all(isinstance(n, int) for n in outcome.values()), outcome
    assert app.extensions["spine_cds"].store.count("hook_timeouts") == 0
    assert app.extensions["spine_cds"].settings.hook_deadline == 0.0001  # the app's own is unchanged


def test_a_warm_up_cut_by_a_deadline_says_so(secured_app, monkeypatch):
    import dataclasses

    real = dataclasses.replace
    monkeypatch.setattr(dataclasses, "replace", lambda obj, **changes: real(
        obj, **{k: (0.0001 if k == "hook_deadline" else v) for k, v in changes.items()}))
    outcome = cli.warm_up(secured_app())
    assert set(outcome.values()) == {"deadline exceeded"}, outcome


def test_a_failing_warm_up_is_reported_and_does_not_stop_the_start(secured_app, monkeypatch, capsys):
    import service.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(service.pipeline, "answer_hook", broken)
    outcome = cli.warm_up(secured_app())
    assert set(outcome.values()) == {"RuntimeError"}
    assert "warm-up failed" in capsys.readouterr().err
