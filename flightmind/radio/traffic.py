"""Who is on the radio in synthetic text: airports (with the names of their tower, approach and
center) and aircraft call signs, general aviation ("Skyhawk seven three four Alpha Bravo") and
airline ("Delta fourteen seventy-two"). The tables are JSON files in tables/, shipped with the package.

Shared by the synthetic cockpit commands (commands.py) and the demo corpus (flightmind.demo).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources

from flightmind.radio.phraseology import say, words


def _table(name: str) -> dict:
    return json.loads(resources.files(__package__).joinpath("tables", name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Airport:
    icao: str
    name: str  # as controllers say it: "Kennedy" Tower
    city: str  # "New York, NY"
    elevation: int  # feet
    runways: tuple[str, ...]  # runway ends, e.g. "04L"
    approach: str
    center: str


@dataclass
class Flight:
    type: str
    written: str  # "N734AB", "DAL1472"
    full: str  # first contact: "Skyhawk seven three four Alpha Bravo"
    short: str  # after the controller abbreviates it: "Skyhawk four Alpha Bravo"
    jet: bool


AIRPORTS = [Airport(**dict(row, runways=tuple(row["runways"]))) for row in _table("airports.json")["airports"]]
_AIRCRAFT = _table("aircraft.json")
GA_TYPES: dict[str, list[str]] = _AIRCRAFT["ga_types"]  # type as written: names a pilot may use on the radio
AIRLINES = [(a["telephony"], a["designator"], a["types"]) for a in _AIRCRAFT["airlines"]]


def random_ga(rng: random.Random, types: list[str]) -> Flight:
    """A US-registered airplane of one of ``types``: N, 3 to 5 digits and letters, never I or O."""
    type_ = rng.choice(types)
    digits = rng.randint(3, 5)
    reg = str(rng.randint(1, 9)) + "".join(str(rng.randrange(10)) for _ in range(digits - 1))
    reg += "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(min(2, 5 - digits)))
    name = rng.choice(GA_TYPES[type_])
    return Flight(type_, "N" + reg, f"{name} {say(reg)}", f"{name} {say(reg[-3:])}", False)


def random_flight(rng: random.Random) -> Flight:
    """General aviation 70 % of the time, else an airline flight."""
    if rng.random() >= 0.3:
        return random_ga(rng, list(GA_TYPES))
    telephony, code, types = rng.choice(AIRLINES)
    number = str(rng.randint(1, 2999))
    if len(number) >= 3 and number[-2] != "0" and rng.random() < 0.5:
        spoken = f"{words(int(number[:-2]))} {words(int(number[-2:]))}"  # "Delta fourteen seventy-two"
    else:
        spoken = say(number)
    call = f"{telephony} {spoken}"
    return Flight(rng.choice(types), code + number, call, call, True)
