"""NTSB-style accident narratives for the demo corpus: circumstances, one of eight scenarios (fuel
exhaustion, crosswind, carburetor ice, VFR into IMC, density altitude, gear up, bounced landing,
engine failure) whose numbers are worked out from the weather, the pilot's experience and a
probable cause. Tables: tables/narratives.json.
"""

from __future__ import annotations

import math
import random

from flightmind.radio.traffic import AIRPORTS, GA_TYPES, random_ga
from flightmind.demo import demo_table
from flightmind.demo.reports import metar_text, random_observation
from flightmind.demo.weather import (
    density_altitude, runway_heading, sky_words, vis_words, wind_components, wind_words,
)

_TABLE = demo_table("narratives")
CARBURETED: list[str] = _TABLE["carbureted"]  # carburetor icing
RETRACTABLE: list[str] = _TABLE["retractable"]  # gear-up landings
SINGLES = [t for t in GA_TYPES if t != "Piper PA-44-180"]
ZONES: dict[str, list[str]] = _TABLE["time_zones"]  # zone: states
MONTHS = "January February March April May June July August September October November December".split()


def time_zone(state: str, month: int) -> str:
    zone = next(name for name, states in ZONES.items() if state in states)
    daylight = 3 <= month <= 10 and state not in ("AZ", "HI")  # roughly March to early November
    return f"{zone} {'daylight' if daylight else 'standard'} time"


def carb_icing_risk(temp: float, dew: float) -> tuple[int, str]:
    """Relative humidity (Magnus formula) and the band it falls in on the carburetor icing chart."""
    rh = round(100 * math.exp(17.625 * dew / (243.04 + dew)) / math.exp(17.625 * temp / (243.04 + temp)))
    if -10 <= temp <= 30 and rh >= 80:
        return rh, "serious icing at any power setting"
    if -10 <= temp <= 30 and rh >= 50:
        return rh, "serious icing at glide power"
    return rh, "light icing at glide power"


def narrative_doc(rng: random.Random) -> str:
    """An accident report: circumstances, a scenario whose numbers are worked out, experience, probable cause."""
    scenario = rng.choice(["fuel", "crosswind", "carb", "imc", "density", "gear", "bounce", "mechanical"])
    f = random_ga(rng, CARBURETED if scenario == "carb" else RETRACTABLE if scenario == "gear" else SINGLES)
    airport = rng.choice(AIRPORTS)
    obs = random_observation(rng, airport)
    w = obs.weather
    rwy = rng.choice(airport.runways)
    if scenario == "crosswind":  # a strong, gusty wind well across the runway
        w.wind_dir = (runway_heading(rwy) + rng.choice([-80, -60, -50, -40, 40, 50, 60, 80])) % 360 or 360
        w.wind_kt, w.variable, w.vary = rng.randint(10, 22), False, None
        w.gust_kt = w.wind_kt + rng.randint(6, 14)
    he, his = rng.choice([("he", "his"), ("she", "her")])
    year, month, day = rng.randint(2008, 2024), rng.randint(1, 12), rng.randint(1, 28)
    total = rng.choice([rng.randint(40, 300), rng.randint(300, 2500), rng.randint(2500, 12000)])
    student = total < 80 and scenario != "density"  # the density scenario carries passengers
    cert = "student" if student else rng.choice(["private", "private", "commercial", "airline transport"])
    injuries = ["was not injured", "sustained minor injuries", "was seriously injured"]
    with_passengers = ["and the passenger were not injured", "and two passengers were not injured"]
    injury = rng.choice(injuries if student else injuries + with_passengers)
    damage = rng.choice(["the wings and fuselage", "the firewall", "the left wing", "the right wing", "the empennage"])
    purpose = "instructional" if student else rng.choice(["personal", "personal", "business", "instructional"])
    city, state = airport.city.split(", ")
    where = rng.choice(["near", "about 3 miles north of", "about 6 miles southwest of", "at"])
    opening = (f"On {MONTHS[month - 1]} {day}, {year}, about {rng.randint(6, 20):02d}{rng.randrange(0, 60, 5):02d} "
               f"{time_zone(state, month)}, a {f.type}, {f.written}, sustained substantial damage to {damage} when "
               f"it was involved in an accident {where} {city}, {state}. The {cert} pilot {injury}. The airplane was "
               f"operated as a Title 14 Code of Federal Regulations Part 91 {purpose} flight.")

    if scenario == "fuel":
        fuel, burn, planned_gs = rng.randint(18, 50), round(rng.uniform(7.5, 13), 1), rng.randint(95, 150)
        endurance = fuel / burn
        distance = round(planned_gs * endurance * rng.uniform(0.8, 0.95))
        actual_gs = round(distance / endurance * rng.uniform(0.8, 0.93))  # slow enough to run dry
        short_by = distance - actual_gs * endurance
        body = (f"The pilot reported that {he} departed with about {fuel} gallons of usable fuel for the "
                f"{distance}-nautical-mile flight and planned a groundspeed of {planned_gs} knots, for an estimated "
                f"flight time of {distance / planned_gs:.1f} hours. At the planned fuel burn of {burn} gallons per "
                f"hour, the fuel on board provided about {endurance:.1f} hours of endurance, with no reserve. A "
                f"stronger than forecast headwind reduced the groundspeed to about {actual_gs} knots, which extended "
                f"the flight to about {distance / actual_gs:.1f} hours. About {short_by:.0f} miles from the "
                "destination, the engine lost total power, and the pilot performed a forced landing to a "
                f"{rng.choice(['field', 'road', 'golf course', 'pasture'])}. Examination of the airplane revealed no "
                "usable fuel in either tank and no evidence of a fuel leak.")
        cause = (f"The pilot's inadequate fuel planning and {his} decision to continue the flight despite a reduced "
                 "groundspeed, which resulted in a total loss of engine power due to fuel exhaustion.")
    elif scenario == "crosswind":
        cross, _, side = wind_components(w.wind_dir, w.wind_kt, rwy)
        gust_cross = wind_components(w.wind_dir, w.gust_kt, rwy)[0]
        body = (f"The pilot reported that during the landing roll on runway {rwy}, a gust of wind from the {side} "
                f"lifted the {'left' if side == 'right' else 'right'} wing and the airplane veered off the runway, "
                "where the nose landing gear collapsed. The automated weather observation at the airport, recorded "
                f"about the time of the accident, included {wind_words(w)}. With that wind, the crosswind component "
                f"for runway {rwy} was about {cross} knots, and about {gust_cross} knots in the gusts. The maximum "
                "demonstrated crosswind component for the airplane is 15 knots. The pilot reported that there were "
                "no preaccident mechanical malfunctions or failures that would have precluded normal operation.")
        cause = ("The pilot's failure to maintain directional control during the landing roll in gusting crosswind "
                 "conditions.")
    elif scenario == "carb":
        temp, dew = obs.temp / 10, obs.dew / 10
        rh, band = carb_icing_risk(temp, dew)
        body = (f"During cruise flight at {rng.randrange(30, 95, 5) * 100:,} feet, the engine began to run rough and "
                "lose power. The pilot did not apply carburetor heat, and the engine subsequently lost total power. "
                f"{he.capitalize()} performed a forced landing to a field, during which the airplane struck a fence. "
                "A postaccident examination of the engine revealed no mechanical anomalies. The temperature and dew "
                f"point at a nearby airport were {temp:.1f} and {dew:.1f} degrees Celsius, a relative humidity of "
                f"about {rh} percent, which placed the conditions in the range for {band} on the carburetor icing "
                "probability chart.")
        cause = ("A total loss of engine power due to carburetor icing as a result of the pilot's failure to use "
                 "carburetor heat in conditions conducive to carburetor icing.")
    elif scenario == "imc":
        for _ in range(50):  # redraw until the destination is below VFR minimums
            if obs.weather.category in ("IFR", "LIFR"):
                break
            obs = random_observation(rng, airport)
        bad = obs.weather
        ceiling = f"a ceiling of {bad.ceiling:,} feet" if bad.ceiling else "no ceiling"
        body = ("The non-instrument-rated pilot departed under visual flight rules; no record of a weather briefing "
                "was found. Radar data showed the airplane in a series of climbing and descending turns before the "
                f"track ended about {rng.randint(2, 15)} miles from the destination. The weather observation at the "
                f"destination about the time of the accident reported {vis_words(bad)}, {ceiling}, and "
                f"{sky_words(bad)}, conditions classified as {bad.category}. The coded report was: "
                f"{metar_text(rng, obs).splitlines()[0]}")
        cause = ("The non-instrument-rated pilot's decision to continue visual flight into instrument "
                 "meteorological conditions, which resulted in spatial disorientation and a loss of airplane "
                 "control.")
    elif scenario == "density":
        hot = max(round(obs.temp / 10), rng.randint(25, 38))
        pa, da = density_altitude(airport.elevation, obs.altimeter / 100, hot)
        body = ("The pilot reported that the airplane was near its maximum gross weight, with "
                f"{rng.choice(['two', 'three'])} passengers and full fuel. The airport elevation was "
                f"{airport.elevation:,} feet, the temperature was {hot} degrees Celsius, and the altimeter setting "
                f"was {obs.altimeter / 100:.2f} inches of mercury, which resulted in a pressure altitude of about "
                f"{pa:,} feet and a density altitude of about {da:,} feet. The airplane used most of the runway "
                "before lifting off and climbed only a few hundred feet per minute; it struck trees about "
                f"{rng.randrange(300, 1500, 50):,} feet beyond the departure end of the runway. The pilot did not "
                "consult the takeoff performance charts before the flight.")
        cause = ("The pilot's inadequate preflight planning, which resulted in an attempted takeoff in high density "
                 "altitude conditions at a high gross weight and the airplane's failure to attain a climb rate "
                 "sufficient to clear trees.")
    elif scenario == "gear":
        distraction = rng.choice(["traffic in the pattern", "a radio call from another airplane", "a passenger",
                                  "a late runway change"])
        body = (f"The pilot reported that during the approach, {he} was distracted by {distraction} and did not "
                f"complete the before landing checklist. {he.capitalize()} did not hear the landing gear warning "
                "horn, and the airplane touched down with the landing gear retracted and slid to a stop on the "
                "runway. Examination revealed no anomalies with the landing gear system, which extended normally "
                "when the airplane was lifted.")
        cause = "The pilot's failure to extend the landing gear before landing due to distraction."
    elif scenario == "bounce":
        body = (f"The pilot reported that the approach was stabilized at about {rng.randint(60, 75)} knots, but the "
                f"airplane floated during the flare and {he} allowed the nose to drop. The airplane bounced "
                f"{rng.choice(['twice', 'three times', 'several times'])} and the nose landing gear struck the "
                f"runway hard. {he.capitalize()} did not initiate a go-around. The reported wind at the time was "
                f"{wind_words(w).removeprefix('wind ')}. Examination revealed that the firewall was buckled.")
        cause = ("The pilot's improper landing flare and failure to go around after a bounced landing, which resulted "
                 "in a hard landing.")
    else:
        part, finding = rng.choice([
            ("No. 3 cylinder exhaust valve", "a fatigue fracture of the valve stem"),
            ("oil cooler hose", "a chafed and separated hose that had allowed the oil to be pumped overboard"),
            ("crankshaft", "a fatigue fracture at the No. 2 connecting rod journal"),
            ("fuel servo", "an inlet screen blocked with debris"),
            ("magneto drive", "sheared drive gear teeth that had disabled both magnetos"),
        ])
        body = (f"About {rng.randint(10, 45)} minutes after takeoff, while in cruise flight, the pilot heard a loud "
                f"bang and the engine lost power. {he.capitalize()} established the best glide speed and performed a "
                f"forced landing to a {rng.choice(['field', 'road', 'beach', 'pasture'])}. Postaccident examination "
                f"of the engine revealed {finding} in the {part}. The engine had accumulated "
                f"{rng.randint(400, 2100):,} hours since its last overhaul.")
        cause = f"A total loss of engine power due to the failure of the {part}."

    if cert == "student":
        held = "a student pilot certificate"
    else:
        instrument = scenario != "imc" and rng.random() < 0.6
        held = f"a {cert} pilot certificate with an airplane single-engine land rating"
        held += " and an instrument rating" if instrument else ""
    experience = (f"The pilot held {held}. The pilot reported {total:,} total hours of flight experience, of which "
                  f"{min(total, rng.randint(5, 900)):,} were in the accident airplane make and model.")
    return "\n\n".join([opening, body, experience, "Probable cause: " + cause])
