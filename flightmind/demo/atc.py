"""ATC transcripts for the demo corpus: a few consecutive phases of one flight (clearance, taxi,
takeoff, departure, center, approach, landing, taxi in) in spoken phraseology, each instruction
read back, sometimes after the airport's ATIS broadcast.
"""

from __future__ import annotations

import random

from flightmind.radio.phraseology import PHONETIC, say, say_altitude, say_heading, say_runway, words
from flightmind.radio.traffic import AIRPORTS, Airport, random_flight
from flightmind.demo import demo_table
from flightmind.demo.reports import Observation, best_runway, random_observation
from flightmind.demo.weather import (
    COVER, VIS_WORDS, Weather, angle_between, runway_heading, sentence, whole_degrees, wx_words,
)

_NAMES = demo_table("atc")
FIXES: list[str] = _NAMES["fixes"]
VORS: list[str] = _NAMES["vors"]
PARKING: list[str] = _NAMES["parking"]
COMPASS = "north northeast east southeast south southwest west northwest".split()


def compass(deg: float) -> str:
    return COMPASS[round(deg / 45) % 8]


def frequency(rng: random.Random, lo: float, hi: float) -> str:
    """A VHF frequency on the 50 kHz grid between lo and hi MHz, as written: "124.75", "121.9"."""
    n = rng.randrange(round(lo * 20), round(hi * 20)) * 5  # in units of 10 kHz
    text = f"{n // 100}.{n % 100:02d}"
    return text[:-1] if text.endswith("0") else text


def wind_spoken(w: Weather) -> str:
    if w.wind_kt == 0:
        return "wind calm"
    if w.variable:
        return f"wind variable at {say(str(w.wind_kt))}"
    gusts = f", gusts {say(str(w.gust_kt))}" if w.gust_kt else ""
    return f"wind {say_heading(w.wind_dir)} at {say(str(w.wind_kt))}{gusts}"


def temp_spoken(tenths: int) -> str:
    return ("minus " if tenths < 0 else "") + say(str(abs(whole_degrees(tenths))))


def atis(airport: Airport, obs: Observation, info: str, rwy: str) -> str:
    """The recorded airport information broadcast ("information Bravo") built from an observation."""
    w = obs.weather
    vis = " and ".join(VIS_WORDS.get(p, say(p)) for p in w.vis.split())
    sky = []
    ceiling_said = False
    for cover, h, cb in w.clouds:
        height = say_altitude(h * 100)
        if cover in ("BKN", "OVC", "VV") and not ceiling_said:
            ceiling_said = True
            word = COVER[cover].split()[0]  # "broken", "overcast"
            sky.append(f"indefinite ceiling {height}" if cover == "VV" else f"ceiling {height} {word}")

        else:
            sky.append(f"{COVER[cover]} {height}" + (" cumulonimbus" if cb else ""))
    approach = "ILS" if w.category in ("IFR", "LIFR") else "Visual"
    parts = [
        f"{airport.name} information {info}, {say(obs.time)} zulu",
        wind_spoken(w), f"visibility {vis}",
        *(wx_words(c) for c in w.wx), *(sky or ["sky clear"]),
        f"temperature {temp_spoken(obs.temp)}, dew point {temp_spoken(obs.dew)}",
        f"altimeter {say(str(obs.altimeter))}",
        f"{approach} approaches in use, landing and departing runway {say_runway(rwy)}",
        f"advise on initial contact you have information {info}",
    ]
    return "ATIS: " + ". ".join(sentence(p)[:-1] for p in parts) + "."


def atc_doc(rng: random.Random) -> str:
    """A transcript covering a few consecutive phases of one flight, from clearance to parking."""
    f = random_flight(rng)
    dep, arr = rng.sample(AIRPORTS, 2)
    obs_dep, obs_arr = random_observation(rng, dep), random_observation(rng, arr)
    rwy_dep, rwy_arr = best_runway(rng, dep, obs_dep.weather), best_runway(rng, arr, obs_arr.weather)
    ifr = f.jet or obs_dep.weather.category != "VFR" or obs_arr.weather.category != "VFR" or rng.random() < 0.4
    atis_dep, atis_arr = (PHONETIC[rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")] for _ in range(2))
    squawk = "".join(str(rng.randrange(8)) for _ in range(4))
    # Altitudes stay clear of the terrain at both ends: initial < cruise, descend < cruise.
    floor = (max(dep.elevation, arr.elevation) // 1000 + 3) * 1000
    if f.jet:
        initial = max(rng.choice([5000, 7000, 10000]), (dep.elevation // 1000 + 4) * 1000)
        cruise, descend = rng.randrange(280, 400, 10) * 100, rng.randrange(11, 17) * 1000
    else:
        cruise = (floor // 1000 + rng.randint(1, 5)) * 1000 + (0 if ifr else 500)
        initial = min((dep.elevation // 1000 + rng.choice([2, 3])) * 1000, cruise - 1000)
        descend = (arr.elevation // 1000 + 3) * 1000
    dep_freq, ctr_freq, app_freq = (say(frequency(rng, 118, 136)) for _ in range(3))
    twr_arr, gnd_arr = say(frequency(rng, 118, 121)), say(frequency(rng, 121.6, 122).split(".")[1])
    rwy_out, rwy_in = say_runway(rwy_dep), say_runway(rwy_arr)
    lines: list[tuple[str, str]] = []
    me, short = f.written, f.short
    altitude = [initial]  # assigned altitude, carried from departure to center

    def pilot(text: str):
        lines.append((me, text))

    def atc(station: str, text: str, readback: str | None = None):
        lines.append((station, text))
        if readback:
            pilot(readback)

    def taxiways() -> str:
        names = [rng.choice("ABCDEFGHKLMPZ") + (str(rng.randint(1, 9)) if rng.random() < 0.3 else "")
                 for _ in range(rng.randint(1, 3))]
        return ", ".join(say(n) for n in names)

    def clearance():
        route = rng.choice([
            f"radar vectors {rng.choice(VORS)}, then as filed",
            f"the {rng.choice(VORS)} {say(str(rng.randint(1, 9)))} departure, {rng.choice(FIXES)} transition, then "
            "as filed",
            f"radar vectors {rng.choice(FIXES)}, Victor {say(str(rng.randint(1, 499)))}, {rng.choice(VORS)}, direct",
        ])
        climb, expect = say_altitude(initial), say_altitude(cruise)
        pilot(f"{dep.name} Clearance Delivery, {f.full}, IFR to {arr.name}, with information {atis_dep}.")
        atc(f"{dep.name} Clearance",
            f"{f.full}, cleared to {arr.name} airport via {route}. Climb and maintain {climb}, expect {expect} one "
            f"zero minutes after departure. Departure frequency {dep_freq}, squawk {say(squawk)}.",
            f"Cleared to {arr.name} via {route}, climb and maintain {climb}, expect {expect} one zero minutes after, "
            f"departure {dep_freq}, squawk {say(squawk)}, {short}.")
        atc(f"{dep.name} Clearance", f"{short}, readback correct. Contact ground when ready to taxi.")

    def ground_out():
        where = f"gate {say(rng.choice('ABCDE'))} {words(rng.randint(1, 40))}" if f.jet else rng.choice(PARKING)
        request = "" if ifr else f", VFR to the {compass(rng.randrange(360))}"
        pilot(f"{dep.name} Ground, {f.full}, at {where}, with information {atis_dep}{request}, ready to taxi.")
        route = taxiways()
        crossing = [r for r in dep.runways if angle_between(runway_heading(r), runway_heading(rwy_dep)) > 20]
        hold = f", hold short of runway {say_runway(rng.choice(crossing))}" if crossing and rng.random() < 0.4 else ""
        atc(f"{dep.name} Ground", f"{short}, runway {rwy_out}, taxi via {route}{hold}.",
            f"Runway {rwy_out}, via {route}{hold}, {short}.")

    def tower_departure():
        tower = f"{dep.name} Tower"
        pilot(f"{tower}, {f.full}, holding short runway {rwy_out}, ready for departure.")
        if rng.random() < 0.35:
            atc(tower, f"{short}, runway {rwy_out}, line up and wait, traffic landing the parallel.",
                f"Line up and wait runway {rwy_out}, {short}.")
        heading = (runway_heading(rwy_dep) + rng.choice([-40, -20, 0, 20, 40])) % 360
        vfr = ["left crosswind departure approved", "right downwind departure approved", "fly runway heading"]
        then = f"fly heading {say_heading(heading)}" if ifr else rng.choice(vfr)
        atc(tower, f"{short}, {wind_spoken(obs_dep.weather)}, runway {rwy_out}, cleared for takeoff, {then}.",
            f"Cleared for takeoff runway {rwy_out}, {then.replace(' approved', '')}, {short}.")
        if ifr:
            atc(tower, f"{short}, contact departure.", f"Over to departure, {short}.")

    def departure():
        radar = f"{dep.approach} Departure"
        now = rng.randrange(dep.elevation // 100 + 10, initial // 100) * 100
        pilot(f"{radar}, {f.full}, {say_altitude(now)}, climbing {say_altitude(initial)}.")
        nxt = altitude[0] = min(cruise, initial + rng.choice([2000, 4000, 6000]))
        turn, heading = rng.choice(["left", "right"]), say_heading(rng.randrange(10, 361, 10))
        climb = say_altitude(nxt)
        atc(radar, f"{short}, {radar}, radar contact. Climb and maintain {climb}, turn {turn} heading {heading}.",
            f"Climb and maintain {climb}, {turn} heading {heading}, {short}.")
        if rng.random() < 0.5:
            clock = rng.randint(1, 12)
            other = rng.choice(["a Cessna", "a Boeing seven thirty-seven", "a Piper", "a regional jet", "a helicopter",
                                "type unknown"])
            miles = words(rng.randint(2, 9))
            course = rng.choice(["opposite direction", "same direction", "crossing left to right",
                                 "crossing right to left"])
            atc(radar,
                f"{short}, traffic {words(clock)} o'clock, {miles} miles, {course}, {other} at "
                f"{say_altitude(nxt + rng.choice([-1000, 500, 1000]))}.",
                rng.choice(["Looking for the traffic", "Traffic in sight", "Negative contact"]) + f", {short}.")
        atc(radar, f"{short}, contact {dep.center} Center {ctr_freq}.", f"{ctr_freq}, {short}, good day.")

    def center():
        ctr = f"{dep.center} Center"
        pilot(f"{ctr}, {f.full}, level {say_altitude(altitude[0])}.")
        if altitude[0] < cruise:
            up = say_altitude(cruise)
            atc(ctr, f"{short}, {ctr}, roger. Climb and maintain {up}.", f"Up to {up}, {short}.")
        else:
            atc(ctr, f"{short}, {ctr}, roger.")
        if rng.random() < 0.5:
            fix = rng.choice(FIXES)
            atc(ctr, f"{short}, cleared direct {fix}, resume own navigation.", f"Direct {fix}, {short}.")
        if f.jet and rng.random() < 0.5:
            pilot(f"{ctr}, {short}, any reports of smoother rides at other altitudes?")
            level = say(str(cruise // 100 + rng.choice([-40, 20, 40])))
            atc(ctr, f"{short}, flight level {level} has been reported smooth.")
        down, altimeter = say_altitude(descend), say(str(obs_arr.altimeter))
        atc(f"{arr.center} Center", f"{short}, descend and maintain {down}, {arr.name} altimeter {altimeter}.",
            f"Down to {down}, {altimeter}, {short}.")
        atc(f"{arr.center} Center", f"{short}, contact {arr.approach} Approach {app_freq}.", f"{app_freq}, {short}.")

    def approach():
        radar = f"{arr.approach} Approach"
        vectors = obs_arr.weather.category != "VFR"
        kind = "ILS" if vectors else "visual"
        alt = say_altitude(arr.elevation // 100 * 100 + 2000)
        pilot(f"{radar}, {f.full}, level {say_altitude(descend)}, with information {atis_arr}.")
        atc(radar, f"{short}, {radar}, expect the {kind} approach runway {rwy_in}. Descend and maintain {alt}.",
            f"Expect {kind} {rwy_in}, down to {alt}, {short}.")
        intercept = say_heading((runway_heading(rwy_arr) + rng.choice([-30, 30])) % 360)
        if vectors:
            miles, fix, turn = words(rng.randint(3, 8)), rng.choice(FIXES), rng.choice(["left", "right"])
            atc(radar,
                f"{short}, {miles} miles from {fix}, turn {turn} heading {intercept}, maintain {alt} until "
                f"established on the localizer, cleared ILS runway {rwy_in} approach.",
                f"Heading {intercept}, {alt} until established, cleared ILS {rwy_in}, {short}.")
        else:
            clock, miles = words(rng.choice([10, 11, 12, 1, 2])), words(rng.randint(5, 15))
            atc(radar, f"{short}, airport {clock} o'clock, {miles} miles, report it in sight.",
                f"Airport in sight, {short}.")
            atc(radar, f"{short}, cleared visual approach runway {rwy_in}.", f"Cleared visual {rwy_in}, {short}.")
        atc(radar, f"{short}, contact {arr.name} Tower {twr_arr}.", f"Tower {twr_arr}, {short}.")

    def tower_arrival():
        tower, w = f"{arr.name} Tower", obs_arr.weather
        if ifr:
            pilot(f"{tower}, {f.full}, {'ILS' if w.category != 'VFR' else 'visual'} runway {rwy_in}.")
        else:
            side = rng.choice(["left", "right"])
            miles, bearing = words(rng.randint(6, 12)), compass(rng.randrange(360))
            pattern = say_altitude(arr.elevation // 100 * 100 + 1500)
            pilot(f"{tower}, {f.full}, {miles} miles {bearing}, {pattern}, with information {atis_arr}, "
                  "inbound for landing.")
            atc(tower, f"{short}, {tower}, enter {side} downwind runway {rwy_in}, report midfield.",
                f"Enter {side} downwind runway {rwy_in}, report midfield, {short}.")
            pilot(f"{short}, midfield {side} downwind.")
        number = rng.choice(["", ", number two, follow the Cherokee on base",
                             ", number two, traffic to follow is on a two mile final"])
        atc(tower, f"{short}{number}, {wind_spoken(w)}, runway {rwy_in}, cleared to land.",
            f"Cleared to land runway {rwy_in}, {short}.")
        exit_, turn = say(rng.choice("ABCDEFGHKLMPZ") + str(rng.randint(1, 9))), rng.choice(["left", "right"])
        atc(tower, f"{short}, turn {turn} at {exit_}, contact ground point {gnd_arr}.",
            f"{turn.capitalize()} at {exit_}, ground point {gnd_arr}, {short}.")

    def ground_in():
        to = "the gate" if f.jet else rng.choice(PARKING)
        pilot(f"{arr.name} Ground, {f.full}, clear of runway {rwy_in}, taxi to {to}.")
        route = taxiways()
        atc(f"{arr.name} Ground", f"{short}, taxi to {to} via {route}.",
            f"Via {route} to {to.removeprefix('the ')}, {short}.")


    if ifr:
        phases = [clearance, ground_out, tower_departure, departure, center, approach, tower_arrival, ground_in]
    else:
        phases = [ground_out, tower_departure, tower_arrival, ground_in]
    first = rng.randrange(len(phases))
    for phase in phases[first:first + rng.randint(2, 5)]:
        phase()
    text = [f"ATC transcript: {f.type} {f.written}, {dep.icao} to {arr.icao}, {'IFR' if ifr else 'VFR'}."]
    if phases[first] in (clearance, ground_out) and rng.random() < 0.5:
        text.append(atis(dep, obs_dep, atis_dep, rwy_dep))
    elif phases[first] in (approach, tower_arrival) and rng.random() < 0.5:
        text.append(atis(arr, obs_arr, atis_arr, rwy_arr))
    text += [f"{who}: {said[0].upper()}{said[1:]}" for who, said in lines]
    return "\n".join(text)
