"""Code-set years (issue 12): the ICD-10-CM release loaded from a CDC release given by path, its
validity period, and hook calls dated outside it.

A modified release is built here from the packaged files (M43.11 deleted, M54.19 added, its version
made 2027) and loaded through the configuration: the cards follow it with no code change. It is
loaded into a copy of the library of its own (service/terminology.py), so the packaged tabular the
other tests use is never touched; the test checks that too.

The suite's conftest states a period covering its corpus (SPINE_CDS_TABULAR_EFFECTIVE); the apps
here set the setting themselves ("" = derived from the release, as a fresh install has it).
"""
from __future__ import annotations

import json
import re
import shutil
from datetime import date

import pytest

from service import cli, code_set, create_app
from service.cards import Action, Card, CardCatalogue, Suggestion, contract_problems
from service.config import ConfigError, Settings
from service.services import SERVICES
from service.terminology import ICD10CM, packaged_release, parse_period, read_release

from .support import FIXTURES, ORDER_SIGN_FIXTURE, fresh, load_fixture

KEY = "spine-coding-cds"
PACKAGED = packaged_release()
DERIVED = {"tabular_effective": ""}  # the period derived from the release, not the suite's stated one


def _vignette(name: str) -> dict:
    return fresh(json.loads((FIXTURES / "vignettes" / f"{name}.json").read_text()))


def _post(client, body: dict) -> dict:
    service = next(s for s in SERVICES.values() if s.hook == body["hook"])
    response = client.post(f"/cds-services/{service.id}", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _rules(answer: dict) -> list[tuple[str, tuple]]:
    return sorted((c["extension"][KEY]["rule"], tuple(c["extension"][KEY]["proposedCodes"])) for c in answer["cards"])


def _codes_set(answer: dict) -> set[str]:
    """Every ICD-10-CM code a suggestion of the answer would write into a Condition or an order."""
    out = set()
    for card in answer["cards"]:
        for suggestion in card.get("suggestions", []):
            for action in suggestion.get("actions", []):
                resource = action.get("resource") or {}
                concepts = [resource.get("code")] if resource.get("resourceType") == "Condition" \
                    else resource.get("reasonCode") or []
                out |= {c["code"] for concept in concepts if concept for c in concept.get("coding", [])
                        if c.get("system") == ICD10CM}
    return out


def _dated(body: dict, start: str | None) -> dict:
    """The request with its Encounter's period.start changed (None: removed)."""
    for resource in _resources(body):
        if resource.get("resourceType") == "Encounter":
            if start is None:
                resource.pop("period", None)
            else:
                resource["period"] = {"start": start}
    return body


def _resources(body: dict):
    for value in body.get("prefetch", {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            yield from (e["resource"] for e in value.get("entry", []))
        elif isinstance(value, dict):
            yield value


@pytest.fixture
def app_with(tmp_path):
    def build(**settings):
        return create_app({"database_url": f"sqlite:///{tmp_path / 'spine.sqlite3'}", "log_level": "INFO",
                           **DERIVED, **settings})
    return build


@pytest.fixture
def derived(app_with):
    """The packaged release with its derived period (2026-04-01 to 2026-09-30)."""
    return app_with().test_client()


# ------------------------------------------------------------------ the period
def test_the_packaged_release_knows_its_period_from_its_own_files():
    assert PACKAGED.title == "ICD-10-CM FY2026, April 1 2026 update"
    assert PACKAGED.version == "2026" and PACKAGED.april_update  # <version>, and "April" in the file name
    assert (PACKAGED.period.start, PACKAGED.period.end) == (date(2026, 4, 1), date(2026, 9, 30))
    assert PACKAGED.period_from == "derived"
    assert PACKAGED.covers(date(2026, 9, 30)) and not PACKAGED.covers(date(2026, 10, 1))
    assert not PACKAGED.covers(date(2026, 3, 31))


def test_a_stated_period_replaces_the_derived_one_and_a_bad_one_names_the_setting():
    stated = Settings.from_mapping({"tabular_effective": "2026-10-01/2027-09-30"}).release()
    assert (stated.period.start, stated.period.end, stated.period_from) == (date(2026, 10, 1), date(2027, 9, 30),
                                                                            "stated")
    for bad, says in [("2026-10-01", "not START/END"), ("2027-09-30/2026-10-01", "start is after the end"),
                      ("2026-13-01/2027-01-01", "not START/END")]:
        with pytest.raises(ConfigError, match="SPINE_CDS_TABULAR_EFFECTIVE") as caught:
            Settings.from_mapping({"tabular_effective": bad})
        assert says in str(caught.value)
    assert parse_period(" 2026-04-01 / 2026-09-30 ").end == date(2026, 9, 30)


def test_a_fiscal_year_release_runs_october_to_september(tmp_path):
    xml, listed = tmp_path / "icd10cm-tabular-2027.xml", tmp_path / "icd10cm-codes-2027.txt"
    xml.write_text('<?xml version="1.0"?>\n<ICD10CM.tabular><version>2027</version><introduction/>'
                   "<chapter><name>1</name><desc>x</desc></chapter></ICD10CM.tabular>")
    listed.write_text("A000    Cholera due to Vibrio cholerae 01, biovar cholerae\n")
    release = read_release(str(xml), str(listed))
    assert release.title == "ICD-10-CM FY2027" and not release.april_update
    assert (release.period.start, release.period.end) == (date(2026, 10, 1), date(2027, 9, 30))
    xml.write_text(xml.read_text().replace("<version>2027</version>", "<version>draft</version>"))
    unknown = read_release(str(xml), str(listed))
    assert unknown.period is None and unknown.period_from == "unknown"
    assert "SPINE_CDS_TABULAR_EFFECTIVE" in unknown.describe()["effectiveFrom"]
    assert unknown.describe()["effective"] == "unknown"


# ------------------------------------------------------------------ configuration errors
@pytest.fixture
def release_files(tmp_path):
    xml, listed = tmp_path / "icd10cm-tabular-2027.xml", tmp_path / "icd10cm-codes-2027.txt"
    shutil.copy(PACKAGED.tabular_xml, xml)
    shutil.copy(PACKAGED.code_list, listed)
    return xml, listed


def _problems(**settings) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping(settings)
    return str(caught.value)


def test_a_wrong_release_is_a_configuration_error_naming_the_setting(release_files, tmp_path):
    xml, listed = release_files
    assert "give both" in _problems(tabular_xml=str(xml))
    assert "give both" in _problems(code_list=str(listed))
    said = _problems(tabular_xml=str(tmp_path / "nope.xml"), code_list=str(listed))
    assert "SPINE_CDS_TABULAR_XML: no file" in said
    text = tmp_path / "notes.txt"
    text.write_text("not XML at all\n")
    assert "SPINE_CDS_TABULAR_XML" in _problems(tabular_xml=str(text), code_list=str(listed)) \
        and "is not XML" in _problems(tabular_xml=str(text), code_list=str(listed))
    other = tmp_path / "other.xml"
    other.write_text("<ClaML><version>2026</version><introduction/></ClaML>")
    assert "is not a CDC ICD-10-CM tabular" in _problems(tabular_xml=str(other), code_list=str(listed))
    # The tabular given as the code list, and the CDC's order file (its first word is an order number).
    said = _problems(tabular_xml=str(xml), code_list=str(xml))
    assert "SPINE_CDS_CODE_LIST: line 1" in said and "does not start with an ICD-10-CM code" in said
    order = tmp_path / "icd10cm-order-2027.txt"
    order.write_text("00001 A00     0 Cholera\n")
    assert "SPINE_CDS_CODE_LIST: line 1" in _problems(tabular_xml=str(xml), code_list=str(order))
    binary = tmp_path / "codes.bin"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "cannot be read as UTF-8" in _problems(tabular_xml=str(xml), code_list=str(binary))


@pytest.fixture
def cut_release(release_files):
    """A tabular that starts as one and is cut in the middle: it passes the first lines' check."""
    xml, listed = release_files
    xml.write_text(xml.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    return xml, listed


def test_a_tabular_that_does_not_parse_is_a_configuration_error_at_start(cut_release):
    xml, listed = cut_release
    with pytest.raises(ConfigError) as caught:
        create_app({"database_url": "sqlite://", "tabular_xml": str(xml), "code_list": str(listed)})
    assert "SPINE_CDS_TABULAR_XML and SPINE_CDS_CODE_LIST" in str(caught.value)
    assert "could not be loaded as an ICD-10-CM release (ParseError" in str(caught.value)


def test_check_config_loads_a_release_given_by_path_and_reports_it_never_a_traceback(cut_release, monkeypatch,
                                                                                     capsys):
    xml, listed = cut_release
    monkeypatch.setenv("SPINE_CDS_TABULAR_XML", str(xml))
    monkeypatch.setenv("SPINE_CDS_CODE_LIST", str(listed))
    assert cli.main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "SPINE_CDS_TABULAR_XML and SPINE_CDS_CODE_LIST" in err and "Traceback" not in err


# ------------------------------------------------------------------ a modified release
def _modify(xml_text: str, codes_text: str) -> tuple[str, str]:
    """FY2027 stand-in: M43.11 deleted (both files), M54.19 added (a billable child of M54.1)."""
    deleted, n = re.subn(r"<diag>\s*<name>M43\.11</name>.*?</diag>\s*", "", xml_text, count=1, flags=re.S)
    assert n == 1
    anchor = re.search(r"<name>M54\.18</name>.*?</diag>", deleted, flags=re.S)
    added = (deleted[:anchor.end()] + "\n<diag><name>M54.19</name><desc>Radiculopathy, multiple sites in spine</desc></diag>"
             + deleted[anchor.end():])
    added = added.replace("<version>2026</version>", "<version>2027</version>", 1)
    lines = [line for line in codes_text.splitlines() if line.strip() != "M4311"]
    assert len(lines) == len(codes_text.splitlines()) - 1
    lines.insert(lines.index("M5418") + 1, "M5419")
    return added, "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def modified(tmp_path_factory):
    """An app on the modified release (loaded once: a few seconds), and its files."""
    folder = tmp_path_factory.mktemp("release")
    xml, listed = folder / "icd10cm-tabular-2027.xml", folder / "icd10cm-codes-2027.txt"
    xml_text, codes_text = _modify(PACKAGED.tabular_xml.read_text(encoding="utf-8"),
                                   PACKAGED.code_list.read_text(encoding="utf-8"))
    xml.write_text(xml_text, encoding="utf-8")
    listed.write_text(codes_text, encoding="utf-8")
    app = create_app({"database_url": f"sqlite:///{folder / 'spine.sqlite3'}", "log_level": "INFO",
                      "tabular_xml": str(xml), "code_list": str(listed), **DERIVED})
    return app, xml, listed


def test_the_cards_follow_a_modified_release_without_a_code_change(modified, client):
    app, _, _ = modified
    loaded = app.extensions["spine_cds"]
    assert loaded.terminology.release.title == "ICD-10-CM FY2027"
    assert not loaded.terminology.is_billable("M43.11") and not loaded.terminology.exists("M43.11")
    assert loaded.terminology.is_billable("M54.19")
    assert loaded.terminology.display("M54.19") == "Radiculopathy, multiple sites in spine"
    assert loaded.release.period.start == date(2026, 10, 1)  # FY2027 derived: covers the corpus's 2026-11-20
    ours = app.test_client()

    # M43.10 with a C1-C2 slip: the packaged release proposes M43.11; without M43.11, nothing proposes it.
    body = _vignette("spl-specificity-fires-m43.10-c1-on-c2")
    assert ("SPL-SPECIFICITY", ("M43.11",)) in _rules(_post(client, body))
    answer = _post(ours, fresh(body))
    assert all("M43.11" not in codes for _, codes in _rules(answer)) and "M43.11" not in _codes_set(answer)
    assert "extension" not in answer or "codeSet" not in answer["extension"][KEY]  # FY2027 covers 2026-11-20

    # M54.19 coded: not a code in the packaged release (TAB-HEADER); a billable one in this release.
    body = _vignette("tab-header-fires-m54.19-does-not-exist")
    assert ("TAB-HEADER", ()) in _rules(_post(client, body))
    assert "TAB-HEADER" not in {rule for rule, _ in _rules(_post(ours, fresh(body)))}

    # M43.11 coded and documented: silent before; now a code the release does not have.
    body = _vignette("spl-specificity-silent-correct-m43.11")
    assert _post(client, body) == {"cards": []}
    assert ("TAB-HEADER", ()) in _rules(_post(ours, fresh(body)))


def test_no_answer_of_the_corpus_sets_a_code_the_modified_release_cannot_bill(modified):
    app, _, _ = modified
    terminology, ours = app.extensions["spine_cds"].terminology, app.test_client()
    catalogue = CardCatalogue()
    seen = set()
    for path in sorted((FIXTURES / "vignettes").glob("*.json")):
        answer = _post(ours, fresh(json.loads(path.read_text())))
        seen |= _codes_set(answer)
        for card in answer["cards"]:
            assert contract_problems(card, catalogue) == [], path.name
            assert all(terminology.exists(c) for c in card["extension"][KEY]["proposedCodes"]), path.name
    assert seen and all(terminology.is_billable(code) for code in seen)
    assert "M43.11" not in seen


def test_loading_another_release_leaves_the_packaged_one_alone(modified):
    import simple_icd_10_cm

    from service.app import _TERMINOLOGY

    app, _, _ = modified
    assert app.extensions["spine_cds"].terminology is not _TERMINOLOGY
    assert simple_icd_10_cm.is_leaf("M43.11") and not simple_icd_10_cm.is_valid_item("M54.19")
    assert _TERMINOLOGY.load().is_billable("M43.11") and not _TERMINOLOGY.exists("M54.19")
    assert not any(name.startswith("simple_icd_10_cm_release_") for name in __import__("sys").modules)


def test_readyz_and_check_config_name_the_modified_release(modified, monkeypatch, capsys):
    app, xml, listed = modified
    ready = app.test_client().get("/readyz").get_json()
    assert ready["codeSet"]["release"] == "ICD-10-CM FY2027" and ready["codeSet"]["source"] == "configured"
    assert ready["codeSet"]["effective"] == {"start": "2026-10-01", "end": "2027-09-30"}
    assert "tabularXml" not in ready["codeSet"]  # no file paths on an unauthenticated endpoint
    monkeypatch.setenv("SPINE_CDS_TABULAR_XML", str(xml))
    monkeypatch.setenv("SPINE_CDS_CODE_LIST", str(listed))
    monkeypatch.setenv("SPINE_CDS_TABULAR_EFFECTIVE", "")
    assert cli.main(["check-config"]) == 0  # the same files: the release already loaded is reused
    said = json.loads(capsys.readouterr().out)["code_set"]
    assert said["release"] == "ICD-10-CM FY2027" and said["tabularXml"] == str(xml)
    assert said["effective"] == {"start": "2026-10-01", "end": "2027-09-30"}
    assert said["tableCodesMissing"] == ["M43.11"]  # the code tables name a code this release lacks


def test_the_packaged_release_has_every_code_of_the_code_tables():
    from service.app import _TERMINOLOGY

    assert code_set.table_codes_missing(_TERMINOLOGY.load()) == []


# ------------------------------------------------------------------ outside the period
def test_an_encounter_after_the_period_still_answers_says_so_and_sets_no_code(derived, client):
    body = fresh(load_fixture(ORDER_SIGN_FIXTURE))  # its encounter: 2026-11-20, in FY2027
    inside = _post(client, body)  # the suite's stated period covers it: the answer as it always was
    assert _codes_set(inside) == {"M43.11"} and "extension" not in inside
    answer = _post(derived, fresh(body))
    assert _rules(answer) == _rules(inside)  # what the rules conclude is still said
    assert _codes_set(answer) == set()  # ... but no suggestion writes a code
    said = answer["extension"][KEY]["codeSet"]
    assert said["covered"] is False and said["date"] == "2026-11-20" and said["dateFrom"] == "encounter"
    assert said["release"] == "ICD-10-CM FY2026, April 1 2026 update"
    assert said["effective"] == {"start": "2026-04-01", "end": "2026-09-30"}
    assert said["withheldSuggestions"] == 1
    assert "does not cover this encounter (2026-11-20)" in said["note"]
    card = answer["cards"][0]
    assert card["extension"][KEY]["codeSet"] == {"covered": False, "date": "2026-11-20"}
    assert card["detail"].endswith("verify M43.11 against the release in effect on that date before coding. "
                                   "Suggestions that would set a code are not offered.")
    assert "valid 2026-04-01 to 2026-09-30" in card["detail"]
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert contract_problems(card, CardCatalogue()) == []


def test_excludes1_warnings_on_coded_conditions_are_still_shown_outside_the_period(derived, client):
    body = _vignette("tab-excludes1-fires-cervicalgia-with-disc")
    inside, outside = _post(client, body), _post(derived, fresh(body))
    assert _rules(inside) == _rules(outside) == [("TAB-EXCLUDES1", ())]
    labels = lambda a: [(s["label"], [x["type"] for x in s["actions"]]) for s in a["cards"][0]["suggestions"]]  # noqa: E731
    assert labels(inside) == labels(outside)  # removing one of two codes on the record: a deletion, kept
    assert outside["extension"][KEY]["codeSet"]["withheldSuggestions"] == 0


def test_a_silent_answer_outside_the_period_says_so_too(derived):
    answer = _post(derived, _vignette("spl-specificity-silent-correct-m43.11"))
    assert answer["cards"] == [] and answer["extension"][KEY]["codeSet"]["covered"] is False


def test_inside_the_period_the_answer_is_unchanged(derived, client):
    body = _dated(fresh(load_fixture(ORDER_SIGN_FIXTURE)), "2026-06-15T09:00:00-05:00")
    answer = _post(derived, body)  # the derived period, an encounter inside it
    assert "extension" not in answer and _codes_set(answer) == {"M43.11"}
    stated = _post(client, fresh(body))
    strip = lambda a: json.loads(re.sub(r'"[0-9a-f]{8}-[0-9a-f-]{27}"', '"uuid"', json.dumps(a)))  # noqa: E731
    assert strip(answer) == strip(stated)


@pytest.mark.parametrize("start,covered", [
    ("2026-09-30T23:30:00-05:00", True),   # the day as written, in the record's own time zone
    ("2026-10-01T00:10:00+02:00", False),
    ("2026-09", True),                     # a month inside the period
    ("2026", False),                       # a year: January to March and October on are outside
    ("2026-03-31", False),
])
def test_the_encounter_date_is_read_as_written(derived, start, covered):
    answer = _post(derived, _dated(fresh(load_fixture(ORDER_SIGN_FIXTURE)), start))
    assert ("codeSet" not in answer.get("extension", {}).get(KEY, {})) is covered
    assert (_codes_set(answer) == {"M43.11"}) is covered


def test_without_an_encounter_date_the_call_is_dated_today(derived, monkeypatch):
    body = fresh(load_fixture(ORDER_SIGN_FIXTURE))
    body["context"].pop("encounterId")
    body["prefetch"].pop("encounter")
    monkeypatch.setattr(code_set, "today", lambda: date(2026, 12, 2))
    said = _post(derived, body)["extension"][KEY]["codeSet"]
    assert (said["date"], said["dateFrom"], said["covered"]) == ("2026-12-02", "today", False)
    assert "today (2026-12-02; the record gives no encounter date)" in said["note"]
    monkeypatch.setattr(code_set, "today", lambda: date(2026, 7, 1))
    assert "extension" not in _post(derived, fresh(body))
    # An encounter without a period.start is dated today as well.
    monkeypatch.setattr(code_set, "today", lambda: date(2026, 12, 2))
    said = _post(derived, _dated(fresh(load_fixture(ORDER_SIGN_FIXTURE)), None))["extension"][KEY]["codeSet"]
    assert said["dateFrom"] == "today"


def test_a_release_of_unknown_period_vouches_for_no_date(release_files, app_with):
    xml, listed = release_files
    xml.write_text(xml.read_text(encoding="utf-8").replace("<version>2026</version>", "<version>draft</version>", 1),
                   encoding="utf-8")
    app = app_with(tabular_xml=str(xml), code_list=str(listed))
    said = _post(app.test_client(), fresh(load_fixture(ORDER_SIGN_FIXTURE)))["extension"][KEY]["codeSet"]
    assert said["effective"] == "unknown" and said["covered"] is False
    assert "is not known" in said["note"]
    assert app.test_client().get("/readyz").get_json()["codeSet"]["effective"] == "unknown"


def test_outside_the_period_a_query_keeps_its_answers_without_their_actions():
    """A query's answer that maps to a code keeps its place (the question still stands), without the
    action; a recode is withheld; a deletion and a resequencing are kept."""
    condition = {"resourceType": "Condition", "id": "c1",
                 "code": {"coding": [{"system": ICD10CM, "code": "M43.10"}]}}
    recoded = {**condition, "code": {"coding": [{"system": ICD10CM, "code": "M43.11"}]}}
    record = type("Record", (), {"raw": {"Condition/c1": condition}})()
    query = Card(rule="SPL-DOCS", values={"query": {"element": "region"}}, missing_documentation=["region"],
                 suggestions=[Suggestion("answer", [Action("update", "set", recoded)], {"answer": "C1-C2"}),
                              Suggestion("answer", [], {"answer": "other"})])
    recode = Card(rule="SPL-SPECIFICITY", proposed_codes=["M43.11"],
                  suggestions=[Suggestion("recode", [Action("update", "recode", recoded)])])
    keep = Card(rule="TAB-EXCLUDES1", suggestions=[Suggestion("keep", [Action("delete", "rm", resource_id="Condition/c1")])])
    same = Card(rule="RAD-RA-SEQUENCING", suggestions=[Suggestion("sequence", [Action("update", "rank", condition)])])
    terminology = create_app({"database_url": "sqlite://", "log_level": "ERROR"}).extensions["spine_cds"].terminology
    outside = code_set.Dated(PACKAGED, date(2026, 11, 20), date(2026, 11, 20), "encounter", False)
    cards, withheld = code_set.vouch([query, recode, keep, same], record, terminology, outside)
    assert [len(s.actions) for s in cards[0].suggestions] == [0, 0] and cards[0].suggestions[0].uuid == \
        query.suggestions[0].uuid
    assert cards[1].suggestions == []
    assert cards[2].suggestions == keep.suggestions and cards[3].suggestions == same.suggestions
    assert withheld.suggestions == 2 and withheld.cards[recode.uuid] == ["M43.11"]
    inside = code_set.Dated(PACKAGED, date(2026, 6, 1), date(2026, 6, 1), "encounter", True)
    cards, withheld = code_set.vouch([query, recode], record, terminology, inside)
    assert cards == [query, recode] and withheld.suggestions == 0


# ------------------------------------------------------------------ where the period is shown
def test_readyz_and_check_config_show_the_packaged_period(derived, monkeypatch, capsys):
    monkeypatch.setattr(code_set, "today", lambda: date(2026, 12, 2))
    ready = derived.get("/readyz").get_json()
    assert ready["checks"] == {"terminology": True, "database": True}
    assert ready["codeSet"]["release"] == "ICD-10-CM FY2026, April 1 2026 update"
    assert ready["codeSet"]["effective"] == {"start": "2026-04-01", "end": "2026-09-30"}
    assert ready["codeSet"]["effectiveFrom"].startswith("derived from the release: FY2026")
    assert ready["codeSet"]["coversToday"] is False
    monkeypatch.setattr(code_set, "today", lambda: date(2026, 5, 1))
    assert derived.get("/readyz").get_json()["codeSet"]["coversToday"] is True

    monkeypatch.setenv("SPINE_CDS_TABULAR_EFFECTIVE", "")
    assert cli.main(["check-config"]) == 0
    said = json.loads(capsys.readouterr().out)["code_set"]
    assert said["effective"] == {"start": "2026-04-01", "end": "2026-09-30"} and said["source"] == "packaged"
    assert said["tabularXml"].endswith("icd10c-tabular-April-1-2026.xml") and said["coversToday"] is True
    assert "loadSeconds" not in said  # the packaged release is not parsed by check-config


def test_the_rule_pages_show_the_period_and_their_examples_within_it(derived):
    index = derived.get("/rules").get_data(as_text=True)
    assert "ICD-10-CM FY2026, April 1 2026 update, valid 2026-04-01 to 2026-09-30" in index
    page = derived.get("/rules/SPL-SPECIFICITY").get_data(as_text=True)
    assert "valid 2026-04-01 to 2026-09-30" in page and "as\nof 2026-04-01" in page
    # The vignettes are dated 2026-11-20: checked as of the period's first day, they show the proposal.
    assert "Recode as M43.11" in page and "are not offered" not in page
