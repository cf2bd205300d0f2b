"""CORS for browser clients, configuration checks, health endpoints."""
from __future__ import annotations

import logging

import pytest

from service.config import ConfigError, Settings

SANDBOX = "https://sandbox.cds-hooks.org"


# ------------------------------------------------------------------------ CORS
@pytest.mark.parametrize("path,method", [("/cds-services", "GET"),
                                         ("/cds-services/spine-coding-order-sign", "POST"),
                                         ("/cds-services/spine-coding-order-sign/feedback", "POST")])
def test_preflight_is_answered_without_a_jwt(make_app, tmp_path, path, method):
    (tmp_path / "k.json").write_text('{"keys": []}')
    client = make_app(trusted_issuers=[{"iss": "https://ehr.test", "jwks_file": str(tmp_path / "k.json")}],
                      public_base_url="https://cds.test").test_client()
    response = client.options(path, headers={
        "Origin": SANDBOX, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert method in response.headers["Access-Control-Allow-Methods"]
    # ...while the real call still needs the token
    assert client.open(path, method=method, headers={"Origin": SANDBOX}).status_code == 401


def test_cors_headers_on_the_actual_post(client, order_sign_request):
    response = client.post("/cds-services/spine-coding-order-sign", json=order_sign_request,
                           headers={"Origin": SANDBOX})
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX


def test_unlisted_origin_gets_no_cors_grant(client):
    response = client.get("/cds-services", headers={"Origin": "https://evil.test"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_configured_origins(make_app):
    client = make_app(cors_origins="https://ehr.example.org, https://other.example.org").test_client()
    response = client.get("/cds-services", headers={"Origin": "https://other.example.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://other.example.org"
    assert "Access-Control-Allow-Origin" not in client.get(
        "/cds-services", headers={"Origin": SANDBOX}).headers


LOCAL_SANDBOX = "http://localhost:3000"  # the sandbox built from its source and served locally
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
ORDER_SIGN = "/cds-services/spine-coding-order-sign"


def _preflight(client, origin, path=ORDER_SIGN, **headers):
    return client.options(path, headers={"Origin": origin, **PREFLIGHT, **headers})


def _refusals(caplog):
    return [r for r in caplog.records if r.name == "service.cors"]


def test_a_refused_preflight_is_a_403_that_names_the_origin_and_the_setting(client, caplog):
    with caplog.at_level(logging.INFO):
        response = _preflight(client, LOCAL_SANDBOX)
    assert response.status_code == 403
    assert response.mimetype == "application/fhir+json"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["code"] == "forbidden"
    assert LOCAL_SANDBOX in issue["diagnostics"]
    assert f"SPINE_CDS_CORS_ORIGINS={SANDBOX},{LOCAL_SANDBOX}" in issue["diagnostics"]
    [record] = _refusals(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (f"CORS: refused a preflight from origin {LOCAL_SANDBOX}, not in "
                                   "SPINE_CDS_CORS_ORIGINS (answered 403)")


@pytest.mark.parametrize("method,path", [("GET", "/cds-services"), ("POST", ORDER_SIGN),
                                         ("POST", ORDER_SIGN + "/feedback")])
def test_a_cross_origin_request_from_an_unlisted_origin_is_refused_before_anything_runs(
        make_app, tmp_path, order_sign_request, method, path, caplog):
    (tmp_path / "k.json").write_text('{"keys": []}')
    app = make_app(trusted_issuers=[{"iss": "https://ehr.test", "jwks_file": str(tmp_path / "k.json")}],
                   public_base_url="https://cds.test")
    with caplog.at_level(logging.INFO):
        response = app.test_client().open(path, method=method, headers={"Origin": "https://evil.test"},
                                          json=order_sign_request if method == "POST" else None)
    assert response.status_code == 403  # not the 401 of the token check: refused before it
    assert response.get_json()["issue"][0]["code"] == "forbidden"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert [r.getMessage() for r in _refusals(caplog)] == [
        "CORS: refused a cross-origin request from origin https://evil.test, not in SPINE_CDS_CORS_ORIGINS "
        "(answered 403)"]
    assert not any(r.name == "service.auth" for r in caplog.records)  # the JWT was never looked at


def test_refusals_log_the_origin_only_escaped(client, caplog, capsys):
    from service.escaping import EscapingFormatter

    origin = "https://evil.test\x1b[31m\u2028forged"
    with caplog.at_level(logging.INFO):
        response = _preflight(client, origin, Authorization="Bearer canary-token-7f3a",
                              **{"User-Agent": "canary-agent-91c2", "Cookie": "canary-cookie=1"})
    assert response.status_code == 403
    [record] = _refusals(caplog)
    line = EscapingFormatter("%(message)s").format(record)
    assert "\x1b" not in line and "\u2028" not in line and "\n" not in line
    assert "https://evil.test\\x1b[31m\\u2028forged" in line
    logged = caplog.text + capsys.readouterr().err
    for secret in ("canary-token-7f3a", "canary-agent-91c2", "canary-cookie", "authorization, content-type"):
        assert secret not in logged


def test_a_very_long_origin_is_cut_where_it_is_logged_and_named(client, caplog):
    origin = "https://" + "a" * 5000 + ".test"
    with caplog.at_level(logging.INFO):
        response = _preflight(client, origin)
    assert response.status_code == 403
    assert len(response.get_data()) < 1500
    assert len(_refusals(caplog)[0].getMessage()) < 400


def test_a_flood_of_refusals_is_logged_once_per_origin_a_minute(client, caplog):
    with caplog.at_level(logging.INFO):
        statuses = {_preflight(client, "https://evil.test").status_code for _ in range(50)}
        statuses |= {client.get("/cds-services", headers={"Origin": "https://evil.test"}).status_code
                     for _ in range(50)}
        statuses.add(_preflight(client, "https://other.test").status_code)
    assert statuses == {403}  # every one refused...
    assert [r.getMessage().split(",")[0] for r in _refusals(caplog)] == [  # ...logged once per origin
        "CORS: refused a preflight from origin https://evil.test",
        "CORS: refused a preflight from origin https://other.test"]


def test_the_refusal_log_is_rate_limited_and_bounded(caplog):
    from service.cors import RefusalLog

    now = [1000.0]
    refusals = RefusalLog(interval=60, capacity=5, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for _ in range(100):
            refusals.refused("https://evil.test", "preflight")
        now[0] += 59
        refusals.refused("https://evil.test", "preflight")
        assert len(_refusals(caplog)) == 1
        now[0] += 2  # a minute after it was logged: logged again, with the count of the others
        refusals.refused("https://evil.test", "preflight")
        assert _refusals(caplog)[-1].getMessage().endswith("(answered 403; 100 more refused since it was last logged)")

        caplog.clear()
        for n in range(10_000):  # a flood of distinct origins
            refusals.refused(f"https://evil-{n}.test", "preflight")
        messages = [r.getMessage() for r in _refusals(caplog)]
        assert len(messages) == 5  # the 4 origins that fit beside evil.test, and one line for the others
        assert messages[-1] == ("CORS: refused requests from more than 5 origins within 60 s (answered 403); "
                                "1 refused since this was last said, not logged one by one")
        assert len(refusals._seen) == 5  # memory stays bounded

        caplog.clear()
        now[0] += 61  # the remembered origins expire: new ones are logged again...
        refusals.refused("https://late.test", "cross-origin request")
        for n in range(10):  # ...and the flood, counted meanwhile, is said again once the set is full
            refusals.refused(f"https://evil-again-{n}.test", "preflight")
        messages = [r.getMessage() for r in _refusals(caplog)]
        assert messages[0] == ("CORS: refused a cross-origin request from origin https://late.test, not in "
                               "SPINE_CDS_CORS_ORIGINS (answered 403)")
        assert len(messages) == 6
        assert messages[-1].endswith("within 60 s (answered 403); 9996 refused since this was last said, "
                                     "not logged one by one")


def test_the_local_sandbox_origin_setting_allows_it(make_app):
    """As the README writes it: the hosted sandbox and a locally served one."""
    settings = Settings.from_env({"SPINE_CDS_CORS_ORIGINS": "https://sandbox.cds-hooks.org,http://localhost:3000"})
    client = make_app(cors_origins=",".join(settings.cors_origins)).test_client()
    for origin in (SANDBOX, LOCAL_SANDBOX):
        response = _preflight(client, origin)
        assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == origin
    # an origin is scheme, host and port: the same sandbox by another name is another origin
    assert _preflight(client, "http://127.0.0.1:3000").status_code == 403


@pytest.mark.parametrize("configured,origin", [
    ("http://localhost:3000/", "http://localhost:3000"),  # the trailing slash a browser never sends
    ("HTTP://LocalHost:3000", "http://localhost:3000"),
    ("https://sandbox.cds-hooks.org:443", SANDBOX),  # the default port a browser never sends
    ("http://[::1]:3000", "http://[::1]:3000"),  # an IPv6 host, whose brackets flask-cors would read as a regex
])
def test_origins_are_compared_as_a_browser_writes_them(make_app, configured, origin):
    client = make_app(cors_origins=configured).test_client()
    response = _preflight(client, origin)
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == origin
    assert _preflight(client, "http://[::1]:30001").status_code == 403


def test_any_origin_with_a_star(make_app, caplog):
    client = make_app(cors_origins="*").test_client()
    with caplog.at_level(logging.INFO):
        response = _preflight(client, "https://anyone.test")
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == "https://anyone.test"
    assert _refusals(caplog) == []


def test_same_origin_requests_and_other_paths_are_not_refused(client):
    # browsers send Origin on a same-origin POST: the service's own origin is not a cross-origin caller
    response = client.post(ORDER_SIGN + "/feedback", json={"feedback": []}, headers={"Origin": "http://localhost"})
    assert response.status_code != 403
    assert client.get("/cds-services", headers={"Origin": "http://localhost"}).status_code == 200
    assert client.get("/healthz", headers={"Origin": "https://evil.test"}).status_code == 200
    assert client.get("/cds-services").status_code == 200  # no Origin: not a browser's CORS request


def test_the_public_base_urls_origin_is_the_services_own(make_app):
    """Behind a proxy the browser's origin is the public one (the base URL may have a path)."""
    client = make_app(public_base_url="https://cds.example.org:8443/spine").test_client()
    assert client.get("/cds-services", headers={"Origin": "https://cds.example.org:8443"}).status_code == 200
    assert client.get("/cds-services", headers={"Origin": "https://cds.example.org"}).status_code == 403


@pytest.mark.parametrize("value", ["localhost:3000", "http://localhost:3000/cds", "ftp://host",
                                   "https://u@ehr.example.org", "http://localhost:3000?x=1", "null"])
def test_a_value_that_is_not_an_origin_is_refused_at_start(value):
    with pytest.raises(ConfigError, match="SPINE_CDS_CORS_ORIGINS: .*is not an origin"):
        Settings.from_env({"SPINE_CDS_CORS_ORIGINS": f"https://sandbox.cds-hooks.org,{value}"})


def test_the_readmes_sandbox_settings_are_written_as_the_service_reads_them(tmp_path):
    """The local-sandbox origin line and the sandbox's key-file issuer, as the README shows them."""
    import json
    import re

    from .support import ROOT

    readme = (ROOT / "README.md").read_text()
    origins = set(re.findall(r"SPINE_CDS_CORS_ORIGINS=([^\s`'\"]+)", readme))
    assert origins
    for value in origins:
        settings = Settings.from_env({"SPINE_CDS_CORS_ORIGINS": value})
        assert SANDBOX in settings.cors_origins and LOCAL_SANDBOX in settings.cors_origins
    [entry] = json.loads(re.search(r"^SPINE_CDS_TRUSTED_ISSUERS=(\[.*\])$", readme, re.M).group(1))
    assert entry["iss"] == SANDBOX and "jku" not in entry
    (tmp_path / "sandbox-jwks.json").write_text('{"keys": []}')
    entry["jwks_file"] = str(tmp_path / "sandbox-jwks.json")
    base = re.search(r"^SPINE_CDS_PUBLIC_BASE_URL=(\S+)$", readme, re.M).group(1)
    settings = Settings.from_env({"SPINE_CDS_TRUSTED_ISSUERS": json.dumps([entry]), "SPINE_CDS_PUBLIC_BASE_URL": base})
    assert settings.trusted_issuers[0].jwks_file == entry["jwks_file"] and settings.trusted_issuers[0].jku == ()


# ------------------------------------------------------------- configuration
def test_defaults_run_locally_open_on_sqlite():
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.sqlalchemy_url.startswith("sqlite:///") and settings.sqlalchemy_url.endswith("spine-cds.sqlite3")
    assert not settings.auth_enabled
    settings.check_bind()  # loopback without auth is allowed


def test_environment_is_read_with_the_prefix():
    settings = Settings.from_env({"SPINE_CDS_PORT": "9000", "SPINE_CDS_FHIR_ALLOWLIST": "https://a/fhir, https://b/r4",
                                  "SPINE_CDS_ALLOW_OPEN": "yes", "OTHER": "x"})
    assert settings.port == 9000 and settings.allow_open
    assert settings.fhir_allowlist == ("https://a/fhir", "https://b/r4")


def test_every_problem_is_named_at_once():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SPINE_CDS_PORT": "eighty", "SPINE_CDS_JWT_ALGORITHMS": "HS256,none",
                           "SPINE_CDS_FHIR_ALLOWLIST": "ftp://x", "SPINE_CDS_NO_SUCH": "1"})
    text = str(caught.value)
    assert "SPINE_CDS_PORT: 'eighty' is not a whole number" in text
    assert "SPINE_CDS_NO_SUCH: unknown setting" in text
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SPINE_CDS_JWT_ALGORITHMS": "HS256,none", "SPINE_CDS_FHIR_ALLOWLIST": "ftp://x",
                           "SPINE_CDS_LOG_LEVEL": "LOUD"})
    text = str(caught.value)
    assert "HS256 is forbidden" in text and "none is forbidden" in text
    assert "'ftp://x' is not an http(s) base URL" in text and "LOG_LEVEL" in text


def test_trusted_issuers_need_a_public_base_url_and_keys(tmp_path):
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL: required"):
        Settings.from_env({"SPINE_CDS_TRUSTED_ISSUERS": '[{"iss": "https://e", "jku": ["https://e/jwks"]}]'})
    with pytest.raises(ConfigError, match="needs jwks_file or jku"):
        Settings.from_env({"SPINE_CDS_TRUSTED_ISSUERS": '[{"iss": "https://e"}]',
                           "SPINE_CDS_PUBLIC_BASE_URL": "https://cds.test"})
    with pytest.raises(ConfigError, match="invalid JSON"):
        Settings.from_env({"SPINE_CDS_TRUSTED_ISSUERS": "[{"})
    path = tmp_path / "issuers.json"
    path.write_text('[{"iss": "https://e", "jku": "https://e/jwks", "tenants": ["t"]}]')
    settings = Settings.from_env({"SPINE_CDS_TRUSTED_ISSUERS": str(path),
                                  "SPINE_CDS_PUBLIC_BASE_URL": "https://cds.test"})
    assert settings.trusted_issuers[0].jku == ("https://e/jwks",)
    assert settings.trusted_issuers[0].tenants == ("t",)


def test_open_service_on_a_network_address_is_refused_unless_allowed():
    with pytest.raises(ConfigError, match="not a loopback address"):
        Settings.from_env({"SPINE_CDS_HOST": "0.0.0.0"}).check_bind()
    Settings.from_env({"SPINE_CDS_HOST": "0.0.0.0", "SPINE_CDS_ALLOW_OPEN": "true"}).check_bind()
    Settings.from_env({"SPINE_CDS_HOST": "localhost"}).check_bind()


def test_describe_redacts_database_passwords():
    settings = Settings.from_env({"SPINE_CDS_DATABASE_URL": "postgresql+psycopg://u:s3cret@db/x"})
    described = settings.describe()
    assert "s3cret" not in str(described) and described["database"] == "postgresql+psycopg://u:***@db/x"


# -------------------------------------------------------------------- health
def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "pass", "database": {"writeQueue": {
        "pendingRecords": 0, "droppedRecords": 0, "writtenLate": 0, "lastError": None}}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"terminology": True, "database": True}


def test_not_ready_when_the_database_is_gone(make_app, tmp_path):
    app = make_app()
    store = app.extensions["spine_cds"].store
    from sqlalchemy import create_engine
    store.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "database unavailable" in response.get_json()["issue"][0]["diagnostics"]


def test_every_setting_is_documented_in_the_readme():
    from dataclasses import fields

    from .support import ROOT

    readme = (ROOT / "README.md").read_text()
    missing = [f"SPINE_CDS_{f.name.upper()}" for f in fields(Settings)
               if f"`SPINE_CDS_{f.name.upper()}`" not in readme]
    assert missing == []
