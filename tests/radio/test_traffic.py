"""Airports and call signs: the shipped tables load, and a call sign says its registration."""

import random
import re

from flightmind.radio.phraseology import DIGITS, PHONETIC
from flightmind.radio.traffic import AIRLINES, AIRPORTS, GA_TYPES, Airport, random_flight

SPOKEN = {word: str(i) for i, word in enumerate(DIGITS)} | {word: letter for letter, word in PHONETIC.items()}


def test_airport_table_loads():
    assert len(AIRPORTS) == 51 and len({a.icao for a in AIRPORTS}) == 51
    assert AIRPORTS[0] == Airport("KJFK", "Kennedy", "New York, NY", 13,
                                  ("04L", "04R", "13L", "13R", "22L", "22R", "31L", "31R"), "New York", "New York")
    for a in AIRPORTS:
        assert re.fullmatch(r"[KP][A-Z]{3}", a.icao) and re.fullmatch(r"[^,]+, [A-Z]{2}", a.city)
        assert isinstance(a.elevation, int) and 0 <= a.elevation < 6000
        assert a.runways and all(re.fullmatch(r"(0[1-9]|[12]\d|3[0-6])[LRC]?", r) for r in a.runways)


def test_aircraft_table_loads():
    assert len(GA_TYPES) == 12 and GA_TYPES["Cessna 172N"] == ["Cessna", "Skyhawk"]
    assert AIRLINES[1] == ("Delta", "DAL", ["Airbus A220-300", "Boeing 757-200"])
    assert all(re.fullmatch(r"[A-Z]{3}", code) and types for _, code, types in AIRLINES)


def test_call_signs_say_what_is_written():
    rng = random.Random(0)
    flights = [random_flight(rng) for _ in range(400)]
    assert 0.2 < sum(f.jet for f in flights) / len(flights) < 0.4
    for f in flights:
        if f.jet:
            assert f.full == f.short and f.written[:3] in {code for _, code, _ in AIRLINES}
            assert f.type in next(types for _, code, types in AIRLINES if code == f.written[:3])
            continue
        assert re.fullmatch(r"N[1-9]\d{0,4}[A-HJ-NP-Z]{0,2}", f.written) and 4 <= len(f.written) <= 6, f.written
        name = max((n for n in GA_TYPES[f.type] if f.full.startswith(n + " ")), key=len)  # "Diamond Star"
        said = "".join(SPOKEN[w] for w in f.full[len(name):].split())
        assert said == f.written[1:]
        assert f.short == f"{name} " + " ".join(f.full[len(name):].split()[-3:])
