"""Shared test fixtures: apps on temporary databases, real HTTP servers on loopback."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy

# The code-set period (README, "Code-set years"). The corpus (fhir_fixtures/) is dated 2026-11-20, and a
# request without an encounter is dated today: both after the packaged release's period (2026-04-01 to
# 2026-09-30), where answers withhold every suggestion that sets a code. The suite tests the rules, so
# it states a period that covers its dates; tests/test_code_set.py tests the period itself (its apps
# set SPINE_CDS_TABULAR_EFFECTIVE themselves, empty for the derived one). Subprocesses that drop the
# SPINE_CDS_* settings (test_cli, test_readme_commands) run with the derived period, as a fresh install.
os.environ.setdefault("SPINE_CDS_TABULAR_EFFECTIVE", "2026-04-01/2099-12-31")

from service import create_app  # noqa: E402 - after the setting above, which apps read when built

from .support import ORDER_SIGN_FIXTURE, POSTGRES_URL, FakeFhirServer, ServedApp, fresh, load_fixture


@pytest.fixture
def make_app(tmp_path):
    """Build an app with settings overrides, on its own SQLite database."""

    def build(**overrides):
        settings = {"database_url": f"sqlite:///{tmp_path / 'spine.sqlite3'}", "log_level": "INFO"}
        settings.update(overrides)
        return create_app(settings)

    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def order_sign_request():
    return fresh(load_fixture(ORDER_SIGN_FIXTURE))


@pytest.fixture
def serve():
    served: list[ServedApp] = []

    def start(app) -> ServedApp:
        instance = ServedApp(app)
        served.append(instance)
        return instance

    yield start
    for instance in served:
        instance.close()


@pytest.fixture
def fhir_server():
    server = FakeFhirServer()
    yield server
    server.close()


def _postgres_schema_url():
    """A PostgreSQL URL on a fresh schema, or skip saying why (a test that needs it says so)."""
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error means "no server here"
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({type(exc).__name__}); "
                    "set SPINE_CDS_TEST_POSTGRES_URL to run the PostgreSQL feedback tests")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    return engine, schema, f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
        return
    engine, schema, url = _postgres_schema_url()
    yield url
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def postgres_url():
    """(engine, schema, url) on a fresh schema of the test PostgreSQL, or a skip that says why."""
    engine, schema, url = _postgres_schema_url()
    yield engine, schema, url
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()
