"""knowledge/code_tables.toml: every code in the tabular, every proposed code billable, every entry
with an example decided by it, and a malformed table refused at load naming the entry."""
from __future__ import annotations

import pytest

from service.nlp.concepts import LexiconError
from service.rules.tables import PATH, TABLES, CodeTables
from service.terminology import Terminology


@pytest.fixture(scope="module")
def tabular():
    return Terminology().load()


def test_every_code_of_the_tables_is_in_the_tabular(tabular):
    for where, code in TABLES.all_codes():
        assert tabular.exists(code), f"[{where}] {code} is not in the tabular"


def test_every_code_the_tables_propose_is_billable(tabular):
    proposed = [*TABLES.order_reasons.values(), *TABLES.disc_by_level.values(), TABLES.disc_unleveled,
                TABLES.disc_cervicothoracic, *(a.proposed for a in TABLES.causes + TABLES.neuro),
                *(c for codes in TABLES.ra_options.values() for c in codes)]
    for code in proposed:
        assert tabular.is_billable(code), code


def test_region_digits_make_billable_m43_codes(tabular):
    for region, digit in TABLES.region_digit.items():
        assert tabular.is_billable(f"M43.1{digit}"), region
        if region != "multiple":  # there is no M54.19
            assert tabular.is_billable(f"M54.1{digit}"), region


def test_each_fracture_entry_is_chosen_by_its_example_and_gives_billable_codes(tabular):
    for entry in TABLES.fractures:
        on_c1, on_c2 = entry.vertebra == "C1", entry.vertebra == "C2"
        assert TABLES.fracture_for(entry.example, on_c1, on_c2) is entry, entry.example
        for stem in filter(None, (entry.displaced, entry.nondisplaced, entry.anterior, entry.posterior)):
            for seventh in ("A", "D", "S"):
                assert tabular.with_seventh(stem, seventh), f"{stem} + {seventh}"
        if entry.category:
            assert tabular.exists(entry.category)


def test_each_seventh_character_rule_is_chosen_by_its_example():
    for rule in TABLES.seventh_rules:
        assert TABLES.seventh_for(rule.example, fracture=True) == rule.character, rule.example
    assert TABLES.seventh_for("Acute fracture of C2 after a fall today.", fracture=True) == TABLES.seventh_default
    assert TABLES.seventh_for("Open fracture of C2.", fracture=False) == TABLES.seventh_default  # B: fractures only


def test_joints_give_billable_injury_codes(tabular):
    for joint in ("c0-c1", "c1-c2"):
        for kind in ("subluxation", "dislocation"):
            stem = TABLES.joints[joint] + TABLES.joints[kind]
            for seventh in ("A", "D", "S"):
                assert tabular.is_billable(tabular.with_seventh(stem, seventh)), stem + seventh


def test_disc_levels_follow_the_tabular_high_cervical_rule():
    assert TABLES.disc_by_level["C2-C3"] == TABLES.disc_by_level["C3-C4"] == "M50.11"
    assert "C1-C2" not in TABLES.disc_by_level  # there is no disc at C1-C2


def test_every_strength_names_a_rule():
    from service.rules import load_rules
    from service.rules.resolve import MADE_HERE

    rules = set(load_rules()) | set(MADE_HERE)
    for key in TABLES._strength:
        assert key.split(":", 1)[0] in rules, key


@pytest.mark.parametrize("change, message", [
    (("conservative_care_weeks = 12", "conservative_care_weeks = \"twelve\""),
     "conservative_care_weeks"),
    (('"SPL-TRAUMA" = 90 ', '"SPL-TRAUMA" = 900 '), "[strength] SPL-TRAUMA"),
    (("vertebra = \"C1\"\npattern = '(?i)jefferson", "vertebra = \"C3\"\npattern = '(?i)jefferson"), "[[fractures]] #7"),
    (("pattern = '(?i)posterior arch'", "pattern = '(?i)posterior arch('"), "bad pattern"),
    (("[joints]", "[jionts]"), "unknown tables"),
])
def test_a_malformed_table_is_refused_naming_the_entry(tmp_path, change, message):
    text = PATH.read_text()
    old, new = change
    assert old in text, old
    path = tmp_path / "code_tables.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(LexiconError, match=message.replace("[", r"\[").replace("(", r"\(")):
        CodeTables(path)
