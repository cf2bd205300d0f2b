"""The playground and the analytics in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by `make test`) driven by Selenium. Screenshots go to test-artifacts/."""
from __future__ import annotations

import pytest

from service import create_app

from .support import CHROMIUM, CHROMEDRIVER as DRIVER, ROOT, ServedApp, headless_chromium

pytestmark = pytest.mark.served
if not (CHROMIUM and DRIVER):
    pytest.skip("Chromium and chromedriver are not installed (Debian packages chromium, chromium-driver; "
                "`make test` installs them when it can): the browser tests did not run", allow_module_level=True)

from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"
VIGNETTE = "vignettes/spl-trauma-fires-nondisplaced-type-ii-dens.json"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = create_app({"database_url": f"sqlite:///{tmp_path_factory.mktemp('browser') / 'b.sqlite3'}",
                      "log_level": "ERROR"})
    instance = ServedApp(app)
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def browser():
    yield from headless_chromium()


def _submit(driver, button, wait_for: str):
    """Click a form button and wait for the next page (a click does not wait for navigation)."""
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()

    def left(_driver) -> bool:
        try:
            page.is_enabled()
            return False
        except WebDriverException:  # stale, or a node of a page being replaced: the old page is gone
            return True

    WebDriverWait(driver, 15).until(left)
    return WebDriverWait(driver, 15, ignored_exceptions=(WebDriverException,)).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, wait_for)))


def _shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_run_a_vignette_see_the_card_accept_it_and_see_the_count_change(served, browser):
    # playground runs are counted only when asked (?include=playground); EHR figures do not move
    browser.get(served.url + "/analytics")
    ehr_before = int(browser.find_element(By.ID, "accepted").text)
    browser.get(served.url + "/analytics?include=playground")
    before = int(browser.find_element(By.ID, "accepted").text)

    browser.get(served.url + "/")
    Select(browser.find_element(By.NAME, "service")).select_by_value("spine-coding-encounter-sign")
    Select(browser.find_element(By.NAME, "vignette")).select_by_value(VIGNETTE)
    card = _submit(browser, browser.find_element(By.ID, "run"), ".card.critical")
    assert "S12.112A replaces M43.11" in card.find_element(By.CLASS_NAME, "summary").text
    assert card.find_element(By.TAG_NAME, "mark").text == "Acute nondisplaced type II dens fracture."
    _shot(browser, "playground-card")

    assert "Feedback accepted" in _submit(browser, card.find_element(By.CLASS_NAME, "accept"), "#done").text

    browser.get(served.url + "/analytics")
    assert int(browser.find_element(By.ID, "accepted").text) == ehr_before
    browser.find_element(By.NAME, "include").click()  # the page's own box: include playground runs
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"), "#accepted")
    assert "include=playground" in browser.current_url
    assert int(browser.find_element(By.ID, "accepted").text) == before + 1
    assert "SPL-TRAUMA" in browser.find_element(By.TAG_NAME, "table").text
    _shot(browser, "analytics")


def test_dismiss_with_a_reason_shows_in_the_analytics(served, browser):
    browser.get(served.url + "/")
    Select(browser.find_element(By.NAME, "service")).select_by_value("spine-coding-encounter-sign")
    Select(browser.find_element(By.NAME, "vignette")).select_by_value(
        "vignettes/rad-cervicalgia-fires.json")
    card = _submit(browser, browser.find_element(By.ID, "run"), ".card")
    Select(card.find_element(By.NAME, "reason")).select_by_value("provider-will-be-queried")
    assert "dismissed" in _submit(browser, card.find_element(By.CLASS_NAME, "dismiss"), "#done").text
    browser.get(served.url + "/analytics?include=playground")  # the playground's runs, counted on request
    assert "provider-will-be-queried" in browser.page_source
    _shot(browser, "analytics-after-dismiss")


TEMPLATE_SYNTAX = ("{{", "{%", "{#")


def test_rule_pages_show_worked_example_cards_and_no_template_syntax(served, browser):
    browser.get(served.url + "/rules")
    assert not [t for t in TEMPLATE_SYNTAX if t in browser.page_source]
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "table a[href*='/rules/']")]
    assert links
    for link in links:
        browser.get(link)
        text, source = browser.find_element(By.TAG_NAME, "body").text, browser.page_source
        assert not [t for t in TEMPLATE_SYNTAX if t in text or t in source], link
    browser.get(served.url + "/rules/SPL-TRAUMA")
    card = browser.find_element(By.CSS_SELECTOR, ".example.fires .card")
    assert card.find_element(By.CLASS_NAME, "summary").text.strip()
    assert card.find_element(By.CSS_SELECTOR, ".detail blockquote").text.strip()  # the detail, rendered
    assert card.find_elements(By.CSS_SELECTOR, ".evidence li")
    assert browser.find_element(By.CSS_SELECTOR, ".example.silent .near-miss").text.startswith("No SPL-TRAUMA card")
    _shot(browser, "rule-page")


def test_the_playground_shows_a_quote_marked_in_its_paragraph(served, browser):
    # Another vignette than the tests above (the playground shows every card whatever its feedback,
    # but a different record also checks the paragraph view on a second report).
    browser.get(served.url + "/")
    Select(browser.find_element(By.NAME, "service")).select_by_value("spine-coding-encounter-sign")
    Select(browser.find_element(By.NAME, "vignette")).select_by_value(
        "vignettes/spl-specificity-fires-m43.10-c1-on-c2.json")
    card = _submit(browser, browser.find_element(By.ID, "run"), ".card")
    report = next(b for b in card.find_elements(By.CSS_SELECTOR, ".evidence") if "DiagnosticReport/dr-1" in b.text)
    paragraph = report.find_element(By.CSS_SELECTOR, "p.paragraph")
    mark = paragraph.find_element(By.TAG_NAME, "mark")
    assert "C1 on C2" in mark.text  # the MRI's quote ...
    assert mark.text in paragraph.text and len(paragraph.text) > len(mark.text)  # ... in its paragraph
    marks = [m.text for m in card.find_elements(By.CSS_SELECTOR, ".evidence mark")]
    assert len(marks) == len(set(marks))  # each quote once
    _shot(browser, "playground-quote-in-paragraph")


def test_the_playground_shows_chart_markup_as_text(served, browser):
    """Issue 11: a request whose chart carries markdown and HTML payloads (a Condition code, a note's
    text) shows them as text: no <img>, <script> or javascript: link in the card DOM."""
    import json

    from .test_injection import PAYLOADS, injected_request

    client = served.server.app.test_client()
    for field, payload in (("Condition.code", "link"), ("Condition.code", "image"),
                           ("DocumentReference.content", "html"), ("DiagnosticReport.conclusion", "script")):
        body = injected_request(client, field, payload)
        browser.get(served.url + "/")  # the service picker left as it is: the request's own hook
        assert Select(browser.find_element(By.NAME, "service")).first_selected_option.get_attribute("value") == ""
        browser.execute_script("arguments[0].value = arguments[1]", browser.find_element(By.NAME, "request"),
                               json.dumps(body))
        _submit(browser, browser.find_element(By.ID, "run"), ".card")
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        assert cards, field
        for card in cards:
            assert not card.find_elements(By.CSS_SELECTOR, "img, script, iframe, svg, [onerror]"), (field, payload)
            for link in card.find_elements(By.TAG_NAME, "a"):
                assert not (link.get_attribute("href") or "").lower().startswith("javascript:"), (field, payload)
        shown = " ".join(c.text for c in cards).casefold()
        assert PAYLOADS[payload].split(".")[0].casefold() in shown, (field, payload)
    _shot(browser, "playground-chart-markup-as-text")
