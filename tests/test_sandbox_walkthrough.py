"""The README's sandbox walkthrough in a real browser (issue 14).

A stand-in for the CDS Hooks sandbox (tests/sandbox_page/index.html) is served from another origin than
the service, so CORS matters as it does for the real sandbox, and does in headless Chromium what the
sandbox does: discovery, then each screen's exact request (fhir_fixtures/sandbox/: the Patient View's
patient-view, Rx View's order-select of a MedicationRequest, the PAMA Imaging screen's order-select of a
cervical and a knee MRI, Rx Sign's order-sign of a MedicationRequest) to every service of the screen's
hook, each call with a JWT signed as the sandbox signs them (ES384, a `jku` header), and feedback on a
card. The service is a real `spine-cds serve` (gunicorn, tests/served.py) with the walkthrough's
settings: SPINE_CDS_CDI_REVIEW=true, the page's origin in SPINE_CDS_CORS_ORIGINS, SPINE_CDS_PUBLIC_BASE_URL
on localhost, and the sandbox's issuer with a key file (`jwks_file`, as the README's "The CDS Hooks
sandbox with a key file" shows; the key pair is this test's, the header's `jku` the sandbox's, never
fetched). The code-set period is the packaged release's own (nothing states another), as in the
walkthrough: the answers are dated as a fresh install dates them.

Also here, without a browser: the record to load is a valid R4 transaction Bundle whose patient is the
requests' patient.
"""
from __future__ import annotations

import base64
import functools
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .served import Gunicorn
from .support import CHROMIUM, CHROMEDRIVER as DRIVER, FIXTURES, ROOT, headless_chromium

SANDBOX = FIXTURES / "sandbox"
PAGE = Path(__file__).resolve().parent / "sandbox_page" / "index.html"
ISSUER = "https://sandbox.cds-hooks.org"
JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
KID = "spine-cds-test-sandbox-key"
ARTIFACTS = ROOT / "test-artifacts"


# ------------------------------------------------------------------------------ the record (no browser)
def test_the_record_to_load_is_a_valid_r4_transaction_bundle_of_the_requests_patient():
    from fhir.resources.R4B.bundle import Bundle

    raw = json.loads((SANDBOX / "pama-patient_bundle.json").read_text())
    bundle = Bundle.model_validate(raw)  # every resource of it, fully validated as R4 (R4B models)
    assert bundle.type == "transaction"
    for entry in bundle.entry:
        resource = entry.resource
        assert (entry.request.method, entry.request.url) == ("PUT", f"{resource.get_resource_type()}/{resource.id}")
    [patient] = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "Patient"]
    ids = {f"{e.resource.get_resource_type()}/{e.resource.id}" for e in bundle.entry}
    for path in sorted(SANDBOX.glob("*.json")):
        if path.name == "pama-patient_bundle.json":
            continue
        request = json.loads(path.read_text())
        assert request["context"]["patientId"] == patient.id, path.name
        # the prefetch is the record as a FHIR server holding the Bundle answers the templates
        for value in request["prefetch"].values():
            resources = [e["resource"] for e in value["entry"]] if value["resourceType"] == "Bundle" else [value]
            for resource in resources:
                assert f"{resource['resourceType']}/{resource['id']}" in ids, (path.name, resource["id"])
                assert resource in [e["resource"] for e in raw["entry"]]


# ------------------------------------------------------------------------------ the browser
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="Chromium and chromedriver are not installed (Debian packages chromium, chromium-driver; `make test` "
           "installs them when it can): the sandbox walkthrough's browser test did not run")


def _key_pair(tmp: Path) -> tuple[dict, Path]:
    """An EC P-384 key pair: the private JWK for the page, the public JWK Set as the issuer's key file."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    numbers = key.private_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(48, "big")).rstrip(b"=").decode()

    public = {"kty": "EC", "crv": "P-384", "x": b64(numbers.public_numbers.x), "y": b64(numbers.public_numbers.y)}
    jwks = tmp / "sandbox-jwks.json"
    jwks.write_text(json.dumps({"keys": [dict(public, kid=KID, use="sig", alg="ES384")]}))
    return dict(public, d=b64(numbers.private_value)), jwks


class _Page:
    """The stand-in page and the requests it sends, served from a directory on a port of its own."""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


class _Served(Gunicorn):
    """`spine-cds serve` whose public base URL is the URL the page calls, as the sandbox calls
    http://localhost:8080 (another port here: 8080 may be taken on this shared machine)."""

    def start(self) -> None:
        self.env["SPINE_CDS_PUBLIC_BASE_URL"] = f"http://localhost:{self.port}"
        super().start()


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """(the page's origin, an origin the service does not allow, the served instance)."""
    tmp = tmp_path_factory.mktemp("walkthrough")
    private, jwks = _key_pair(tmp)
    site = tmp / "site"
    (site / "requests").mkdir(parents=True)
    shutil.copy(PAGE, site / "index.html")
    for path in SANDBOX.glob("*.json"):
        shutil.copy(path, site / "requests" / path.name)
    page, elsewhere = _Page(site), _Page(site)
    data = tmp / "data"
    data.mkdir()
    server = _Served(data, env={"SPINE_CDS_CDI_REVIEW": "true",
                                "SPINE_CDS_CORS_ORIGINS": f"https://sandbox.cds-hooks.org,{page.origin}",
                                "SPINE_CDS_TRUSTED_ISSUERS": json.dumps([{"iss": ISSUER, "jwks_file": str(jwks)}])},
                     workers=2)
    (site / "config.json").write_text(json.dumps({
        "service": f"http://localhost:{server.port}", "issuer": ISSUER, "kid": KID, "jku": JKU,
        "privateJwk": private}))
    yield page.origin, elsewhere.origin, server
    server.stop()
    page.close()
    elsewhere.close()


@pytest.fixture(scope="module")
def browser():
    yield from headless_chromium()


def _open(browser, url: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done") == "true")
    return browser


def _cards(browser, screen: str) -> list[dict]:
    from selenium.webdriver.common.by import By

    out = []
    for card in browser.find_elements(By.CSS_SELECTOR, f"#screen-{screen} li.card"):
        out.append({"summary": card.text, **{k: card.get_attribute(f"data-{k}") for k in (
            "indicator", "kind", "rule", "proposed", "suggestions")}})
    return out


def _answers(browser, screen: str) -> list[tuple[str, str]]:
    """(service, HTTP status) of each call the screen made."""
    from selenium.webdriver.common.by import By

    return [(o.get_attribute("data-service"), o.get_attribute("data-status"))
            for o in browser.find_elements(By.CSS_SELECTOR, f"#screen-{screen} ol.cards")]


@pytest.mark.served
@needs_chromium
def test_the_sandbox_screens_from_another_origin_get_the_walkthroughs_cards(walkthrough, browser):
    from selenium.webdriver.common.by import By

    origin, _, server = walkthrough
    _open(browser, origin + "/index.html")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "sandbox-walkthrough.png"))
    assert browser.find_element(By.ID, "errors").text == ""
    # discovery, with the CDI review enabled: the five services
    services = {li.get_attribute("data-id"): li.get_attribute("data-hook")
                for li in browser.find_elements(By.CSS_SELECTOR, "#services li")}
    assert services == {"spine-coding-order-sign": "order-sign", "spine-coding-order-select": "order-select",
                        "spine-coding-encounter-sign": "encounter-sign",
                        "spine-coding-encounter-discharge": "encounter-discharge",
                        "spine-coding-cdi-review": "patient-view"}

    # PAMA Imaging, MRI cervical spine (CPT 72141) for "Cervical radiculopathy" (SNOMED CT): one card, M54.11
    assert _answers(browser, "pama-c2") == [("spine-coding-order-select", "200")]
    [card] = _cards(browser, "pama-c2")
    assert (card["rule"], card["kind"], card["indicator"], card["proposed"]) == (
        "ORD-DIAGNOSIS", "medical-necessity", "warning", "M54.11")
    assert card["summary"] == ("Advanced cervical imaging ordered for Cervical radiculopathy (SNOMED CT); "
                               "the record supports M54.11")
    # dated today (no encounter): outside the packaged release's period, so no suggestion sets the code
    assert card["suggestions"] == "0"
    # the same screen with a knee MRI: no card
    assert (_answers(browser, "pama-knee"), _cards(browser, "pama-knee")) == ([("spine-coding-order-select", "200")], [])
    # Rx View (order-select) and Rx Sign (order-sign), a MedicationRequest: no card
    assert (_answers(browser, "rx-view"), _cards(browser, "rx-view")) == ([("spine-coding-order-select", "200")], [])
    assert (_answers(browser, "rx-sign"), _cards(browser, "rx-sign")) == ([("spine-coding-order-sign", "200")], [])
    # Patient View: the CDI review, info cards only; the visit's M54.10 with the C2 root documented
    assert _answers(browser, "patient-view") == [("spine-coding-cdi-review", "200")]
    cards = _cards(browser, "patient-view")
    assert cards and {c["indicator"] for c in cards} == {"info"}
    assert {c["kind"] for c in cards} <= {"missing-documentation", "specificity"}
    assert [(c["rule"], c["proposed"]) for c in cards] == [("RAD-SPECIFICITY", "M54.11")]
    # feedback on it, as the sandbox sends it: stored, tied to the card
    feedback = browser.find_element(By.ID, "feedback")
    assert (feedback.get_attribute("data-status"), feedback.get_attribute("data-stored")) == ("200", "1")
    # every call passed the JWT check (a refused one is a 401, never a 200): the log names none refused
    assert "refused a request" not in server.log_text()
    assert "unknown kid" not in server.log_text()


@pytest.mark.served
@needs_chromium
def test_an_origin_the_service_does_not_list_is_refused_by_the_browser(walkthrough, browser):
    """The same page from another origin (not in SPINE_CDS_CORS_ORIGINS): the browser gets a 403 without
    the CORS headers and refuses the answer to the page; the service logs the origin."""
    from selenium.webdriver.common.by import By

    _, elsewhere, server = walkthrough
    _open(browser, elsewhere + "/index.html")
    assert "Failed to fetch" in browser.find_element(By.ID, "errors").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#services li")
    assert elsewhere in server.log_text() and "SPINE_CDS_CORS_ORIGINS" in server.log_text()


def test_the_page_sends_the_fixtures_and_renders_text_only():
    """The page's screens are the sandbox fixtures, and it writes chart text with textContent only."""
    page = PAGE.read_text()
    for name in ("patient-view_sandbox.json", "order-select_rx-view_gabapentin.json",
                 "order-select_pama_c2-radiculopathy.json", "order-select_pama_knee-mri.json",
                 "order-sign_rx-sign_gabapentin.json"):
        assert f'"{name}"' in page and (SANDBOX / name).is_file()
    assert "innerHTML" not in page.replace("never innerHTML", "")
