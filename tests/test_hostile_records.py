"""Hostile records over HTTP, against `spine-cds serve` (2 workers), as issue 11 tried them: a record
that explodes into cards, HTML attachments that broke Python's parser or made it quadratic, and a
Condition coded with markdown for a code. Each answers 200 (a JSON answer, never a 500), within a
second, with a bounded card count and size, and no worker dies. Figures go to
test-artifacts/hostile-records.json (make harden prints them)."""
from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import requests

from service.terminology import ICD10CM

from .served import Gunicorn
from .support import FIXTURES, ROOT

pytestmark = pytest.mark.served

ENCOUNTER_SIGN = "/cds-services/spine-coding-encounter-sign"
ARTIFACT = ROOT / "test-artifacts" / "hostile-records.json"
FIGURES: dict = {}
KEY = "spine-coding-cds"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = Gunicorn(tmp_path_factory.mktemp("hostile"))
    yield served
    served.stop()
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(FIGURES, indent=2) + "\n")


def _vignette() -> dict:
    body = json.loads((FIXTURES / "vignettes" / "spl-specificity-fires-m43.10-c1-on-c2.json").read_text())
    body["hookInstance"] = str(uuid.uuid4())
    return body


def _with_conditions(codes) -> dict:
    body = _vignette()
    template = body["prefetch"]["conditions"]["entry"][0]["resource"]
    entries = []
    for n, code in enumerate(codes):
        resource = json.loads(json.dumps(template))
        resource["id"] = f"many-{n}-{uuid.uuid4().hex[:8]}"  # new every call: no cache hides the cost
        resource["code"] = {"coding": [{"system": ICD10CM, "code": code}]}
        entries.append({"resource": resource})
    body["prefetch"]["conditions"]["entry"] = entries
    return body


def _with_html_note(markup: str) -> dict:
    body = _vignette()
    note = body["prefetch"]["documentReferences"]["entry"][0]["resource"]
    note["content"] = [{"attachment": {"contentType": "text/html",
                                       "data": base64.b64encode((markup + f"<!-- {uuid.uuid4()} -->")
                                                                .encode()).decode()}}]  # new every call
    return body


def _post(server, body: dict):
    started = time.monotonic()
    response = requests.post(server.url + ENCOUNTER_SIGN, json=body, timeout=30)
    return response, time.monotonic() - started


HOSTILE = {
    # 150 M43.11 beside 150 Q76.2: was 22,500 cards, a 61 MB answer and 22,500 rows
    "card explosion (300 Conditions)": lambda: _with_conditions(["M43.11", "Q76.2"] * 150),
    # 9 bytes that broke html.parser: a 500 on every hook for the patient
    "HTML '<![<![<!['": lambda: _with_html_note("<![<![<!["),
    # 100 KB of bad markup, quadratic in html.parser
    "100 KB of unclosed '<a '": lambda: _with_html_note("<a " * 34_000),
    "1 MB of nested <div>": lambda: _with_html_note("<div>" * 200_000 + "C1-C2 anterolisthesis"),
    # a code carrying markdown: was a 500
    "code 'M43.1[X](javascript:..)'": lambda: _with_conditions(["M43.1[X](javascript:alert(1))"]),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_record_answers_fast_bounded_and_no_worker_dies(server, name):
    pids = server.workers_pids()
    _post(server, HOSTILE[name]())  # warm: the figure is the second call, with a record new in every resource
    response, elapsed = _post(server, HOSTILE[name]())
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    cards = response.json()["cards"]
    FIGURES[name] = {"seconds": round(elapsed, 3), "cards": len(cards), "answer_bytes": len(response.content),
                     "worker_deaths": int(server.workers_pids() != pids)}
    assert len(cards) <= 12 and len(response.content) < 200_000
    assert elapsed < 1.0, f"{name}: {elapsed:.2f} s"
    assert server.workers_pids() == pids, f"{name}: a worker died"
    if name.startswith("code"):
        tab = [c for c in cards if c["extension"][KEY]["rule"] == "TAB-HEADER"]
        assert tab and "](" not in tab[0]["summary"].replace("\\](", "")
