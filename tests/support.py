"""Helpers for the tests: fixtures on disk, official examples, fake servers."""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from werkzeug.serving import make_server


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")  # Debian's: `make browser`
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
EXAMPLES = Path(__file__).resolve().parent / "cds_hooks_examples"
ORDER_SIGN_FIXTURE = "order-sign_c1-c2-slip_coded-m43.10.json"

POSTGRES_URL = os.environ.get("SPINE_CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def load_example(name: str):
    path = EXAMPLES / name
    return path.read_text() if path.suffix == ".txt" else json.loads(path.read_text())


def fresh(body: dict) -> dict:
    """A deep copy with a new hookInstance (each call is a new hook invocation)."""
    out = copy.deepcopy(body)
    out["hookInstance"] = str(uuid.uuid4())
    return out


class ServedApp:
    """A real HTTP server (werkzeug, threaded) on a free loopback port, for tests over the wire."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeFhirServer:
    """A FHIR server on loopback whose answers each test sets: path → (status, body, delay).

    It records every request (path and Authorization header) so tests can assert what the
    service asked for, and with which token.
    """

    def __init__(self):
        self.routes: dict[str, tuple] = {}
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                fake.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                path = self.path.split("?", 1)[0]
                route = fake.routes.get(self.path) or fake.routes.get(path)
                if route is None:
                    status, body, delay, headers = 404, {"resourceType": "OperationOutcome", "issue": []}, 0, {}
                else:
                    status, body, delay, headers = (tuple(route) + (0, {}))[:4]
                if delay:
                    threading.Event().wait(delay)
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}/fhir"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def route(self, path: str, body, status: int = 200, delay: float = 0, headers: dict | None = None):
        self.routes["/fhir/" + path.lstrip("/")] = (status, body, delay, headers or {})

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def searchset(*resources, next_url: str | None = None) -> dict:
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": r} for r in resources]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def outcome_issues(response) -> list[dict]:
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"]


def headless_chromium():
    """A headless Chromium under selenium, flagged as this machine needs it (no background networking:
    the closed network refuses it), with a profile of its own; a generator for a pytest fixture."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", f"--user-data-dir={profile}", "--window-size=1200,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
