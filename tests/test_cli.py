"""The command line: evaluate a vignette, check the configuration, serve with gunicorn."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from .support import FIXTURES, ORDER_SIGN_FIXTURE, ROOT

CLI = [sys.executable, "-m", "service.cli"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_CDS_")}
    env.update(extra)
    return env


def test_evaluate_prints_the_response_of_a_vignette(tmp_path):
    result = subprocess.run(CLI + ["evaluate", str(FIXTURES / ORDER_SIGN_FIXTURE)], capture_output=True,
                            text=True, env=_env(SPINE_CDS_DATA_DIR=str(tmp_path)), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["cards"], list)
    assert not (tmp_path / "spine-cds.sqlite3").exists()  # a dry run records nothing


def test_evaluate_prints_cards_as_a_coder_reads_them(tmp_path):
    vignette = FIXTURES / "vignettes" / "spl-trauma-fires-nondisplaced-type-ii-dens.json"
    result = subprocess.run(CLI + ["evaluate", "--text", str(vignette)], capture_output=True, text=True,
                            env=_env(), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == [
        "[CRITICAL] SPL-TRAUMA (reroute)",
        "  Acute dens fracture documented: S12.112A replaces M43.11 (M43.1 Excludes1)",
        "  proposes: S12.112A",
    ]
    assert result.stderr == ""


def test_evaluate_reports_a_bad_request_with_its_outcome(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"hook": "order-sign", "context": {}}))
    result = subprocess.run(CLI + ["evaluate", str(path)], capture_output=True, text=True, env=_env(),
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert json.loads(result.stdout)["resourceType"] == "OperationOutcome"


def test_evaluate_of_a_missing_file_says_so(tmp_path):
    result = subprocess.run(CLI + ["evaluate", str(tmp_path / "nope.json")], capture_output=True, text=True,
                            env=_env(), timeout=60)
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_check_config_prints_settings_or_the_problems():
    ok = subprocess.run(CLI + ["check-config"], capture_output=True, text=True, env=_env(), timeout=60)
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["authentication"].startswith("OFF")
    bad = subprocess.run(CLI + ["check-config"], capture_output=True, text=True, timeout=60,
                         env=_env(SPINE_CDS_HOST="0.0.0.0", SPINE_CDS_PORT="x"))
    assert bad.returncode == 2 and "SPINE_CDS_PORT" in bad.stderr


@pytest.mark.parametrize("env,served,status", [
    ({}, True, 200),                                                   # authentication off: open
    ({"SPINE_CDS_PLAYGROUND": "false"}, True, 200),                    # ... whatever the setting says
    ({"SPINE_CDS_TRUSTED_ISSUERS": "ISSUERS"}, False, 404),
    ({"SPINE_CDS_TRUSTED_ISSUERS": "ISSUERS", "SPINE_CDS_PLAYGROUND": "true"}, True, 401),  # a JWT needed
])
def test_check_config_prints_whether_the_playground_is_served(monkeypatch, capsys, tmp_path, env, served, status):
    """Issue 12: `"playground": false` was printed while the playground was served. The printed state
    is checked against what an app built from the same environment does at GET /."""
    from service import create_app
    from service import cli
    from service.config import Settings

    (tmp_path / "jwks.json").write_text('{"keys": []}')
    for name in [n for n in os.environ if n.startswith("SPINE_CDS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPINE_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'c.sqlite3'}")
    monkeypatch.setenv("SPINE_CDS_PUBLIC_BASE_URL", "https://cds.test")
    issuers = json.dumps([{"iss": "https://ehr.test", "jwks_file": str(tmp_path / "jwks.json")}])
    for name, value in env.items():
        monkeypatch.setenv(name, issuers if value == "ISSUERS" else value)
    assert cli.main(["check-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    state = printed["playground"]
    assert state["served"] is served and state["SPINE_CDS_PLAYGROUND"] is (env.get("SPINE_CDS_PLAYGROUND") == "true")
    assert ("anyone" in state["to"]) is (status == 200) and ("JWT" in state["to"]) is (status == 401)
    assert ("nobody" in state["to"]) is (not served)
    # consistent with playground_access, and with the app itself
    assert ("open to anyone" in printed["playground_access"]) is (status == 200)
    assert ("off (404)" in printed["playground_access"]) is (not served)
    app = create_app(Settings.from_env())
    assert app.test_client().get("/").status_code == status
    app.extensions["spine_cds"].store.engine.dispose()


def test_serve_refuses_an_open_network_bind(tmp_path):
    result = subprocess.run(CLI + ["serve", "--host", "0.0.0.0"], capture_output=True, text=True,
                            env=_env(SPINE_CDS_DATA_DIR=str(tmp_path)), timeout=60)
    assert result.returncode == 2 and "ALLOW_OPEN" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.served
def test_serve_runs_gunicorn_with_workers_and_answers(tmp_path):
    port = _free_port()
    process = subprocess.Popen(CLI + ["serve", "--port", str(port), "--workers", "2"],
                               env=_env(SPINE_CDS_DATA_DIR=str(tmp_path)), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not become ready in 60 s")
        services = requests.get(base + "/cds-services", timeout=5).json()["services"]
        assert len(services) == 4  # order-sign, order-select, encounter-sign, encounter-discharge
        body = json.loads((FIXTURES / ORDER_SIGN_FIXTURE).read_text())
        for _ in range(4):  # spread over both workers
            response = requests.post(base + "/cds-services/spine-coding-order-sign", json=body, timeout=10)
            assert response.status_code == 200
        assert (tmp_path / "spine-cds.sqlite3").exists()
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "Booting worker" in output and output.count("Booting worker") == 2
    assert "AUTHENTICATION IS OFF" in output


# ------------------------------------------------------------ the Bulk Data export of fhir_fixtures (issue 12)
EXPORT = FIXTURES / "export"


def test_the_export_is_the_generators_output():
    sys.path.insert(0, str(FIXTURES))
    try:
        import build_export
    finally:
        sys.path.remove(str(FIXTURES))
    expected = build_export.rendered()
    assert sorted(p.name for p in EXPORT.iterdir()) == sorted(expected)
    for name, text in expected.items():
        assert (EXPORT / name).read_text() == text, f"{name}: run .venv/bin/python fhir_fixtures/build_export.py"
    manifest = json.loads((EXPORT / "manifest.json").read_text())
    for output in manifest["output"]:
        lines = (EXPORT / f"{output['type']}.ndjson").read_text().splitlines()
        assert len(lines) == output["count"] and all(json.loads(l)["resourceType"] == output["type"] for l in lines)


def test_the_audit_of_the_export_gives_each_source_vignettes_cards(tmp_path, client):
    """The audit reads the export's layout (NDJSON per type, the manifest skipped), groups it by patient
    and encounter, and gives each encounter the cards its source vignette gets as a hook call."""
    import csv

    sys.path.insert(0, str(FIXTURES))
    try:
        import build_export
    finally:
        sys.path.remove(str(FIXTURES))
    from service.audit import run

    expected: dict[tuple[str, str], list] = {}
    for patient, encounter, name, _days in build_export.SOURCES:
        answer = client.post("/cds-services/spine-coding-encounter-sign",
                             json=json.loads((FIXTURES / "vignettes" / f"{name}.json").read_text())).get_json()
        expected[(patient, encounter)] = sorted(
            (c["extension"]["spine-coding-cds"]["rule"], " ".join(c["extension"]["spine-coding-cds"]["proposedCodes"]))
            for c in answer["cards"])
    silent = [key for key, cards in expected.items() if not cards]
    assert len(silent) >= 2 and len(expected) - len(silent) >= 3  # some records get cards, some are silent

    summary = run(EXPORT, tmp_path, workers=2, progress=None)
    lines = sum(len(p.read_text().splitlines()) for p in EXPORT.glob("*.ndjson"))
    assert summary["unreadable"] == 0, summary["unreadable_patients"]
    assert summary["patients"] == len({p for p, _ in expected}) and summary["resources"] == lines
    with open(tmp_path / "audit.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    got: dict[tuple[str, str], list] = {key: [] for key in expected}
    for row in rows:
        assert row["rule"] != "(not evaluated)", row
        got.setdefault((row["patient"], row["encounter"]), []).append((row["rule"], row["proposed_codes"]))
    assert {k: sorted(v) for k, v in got.items()} == expected
    assert summary["cards"] == sum(len(v) for v in expected.values())
