"""The demo's JSON tables: they load, they are consistent with each other and with the generators,
and pyproject.toml ships every one of them (and the radio tables) in the wheel."""

import re
import string
from importlib import resources
from pathlib import Path

import pytest

from flightmind.radio.traffic import AIRPORTS, GA_TYPES
from flightmind.demo import demo_table
from flightmind.demo.atc import FIXES, PARKING, VORS
from flightmind.demo.checklists import CHECKLIST_AIRCRAFT, CHECKLIST_FLOWS, CHECKLISTS, EMERGENCIES, NOTES
from flightmind.demo.handbook import HANDBOOK_FACTS
from flightmind.demo.narratives import CARBURETED, RETRACTABLE, ZONES

REPO = Path(__file__).resolve().parents[2]
FEATURES = {"carb", "pump", "retract", "prop"}


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_table_has_a_description():
    for name in ("atc", "checklists", "handbook", "narratives"):
        table = demo_table(name)
        assert isinstance(table["about"], str) and len(table["about"]) > 40


def test_checklists_fit_every_aircraft():
    assert len(CHECKLIST_AIRCRAFT) == 8 and len(CHECKLISTS) == 21
    assert EMERGENCIES == [
        "Engine Failure During Takeoff Roll", "Engine Failure Immediately After Takeoff",
        "Engine Failure During Flight (Restart)", "Emergency Landing Without Engine Power", "Engine Fire In Flight",
        "Electrical Fire In Flight", "Alternator Failure", "Inadvertent Icing Encounter"]
    for a in CHECKLIST_AIRCRAFT:
        assert set(a.features) <= FEATURES and a.vx <= a.vy and a.vr < a.vy
    values = set(vars(CHECKLIST_AIRCRAFT[0])) | {"vy10", "vapp10"}  # what checklist_doc fills in
    for name, items in CHECKLISTS.items():
        assert items, name
        for need, item, action in items:
            assert need in FEATURES | {""} and item and action
            assert placeholders(action) <= values, (name, action)
    assert all(name in CHECKLISTS for flow in CHECKLIST_FLOWS for name in flow)
    assert all(name in CHECKLISTS and placeholders(note) <= values for name, note in NOTES.items())


def test_names_and_facts():
    assert len(FIXES) == len(set(FIXES)) == 22 and all(re.fullmatch(r"[A-Z]{5}", f) for f in FIXES)
    assert len(VORS) == 18 and len(PARKING) == 6
    assert len(HANDBOOK_FACTS) == 20 and all(fact.endswith(".") for fact in HANDBOOK_FACTS)


def test_narrative_tables_match_the_radio_tables():
    assert set(CARBURETED) | set(RETRACTABLE) <= set(GA_TYPES)
    states = [state for states in ZONES.values() for state in states]
    assert len(states) == len(set(states))
    assert {a.city.rsplit(", ", 1)[1] for a in AIRPORTS} <= set(states)  # every airport has a time zone


def test_pyproject_ships_every_table():
    tomllib = pytest.importorskip("tomllib")
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package in ("flightmind.radio", "flightmind.demo"):
        tables = sorted(p.name for p in resources.files(package).joinpath("tables").iterdir() if p.name.endswith(".json"))
        assert tables, package
        package_dir = REPO.joinpath(*package.split("."))
        shipped = {p.name for pattern in package_data[package] for p in package_dir.glob(pattern)}
        assert set(tables) <= shipped, package
