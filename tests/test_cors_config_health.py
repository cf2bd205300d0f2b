"""CORS for browser clients, configuration checks, health endpoints."""
from __future__ import annotations

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
