"""Shared test fixtures: apps on temporary databases, real HTTP servers on loopback."""
from __future__ import annotations

import pytest

from service import create_app

from .support import ORDER_SIGN_FIXTURE, FakeFhirServer, ServedApp, fresh, load_fixture


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
