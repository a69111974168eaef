"""Weather reports for the demo corpus: an observation at an airport, written as a METAR or SPECI
line, or a TAF with change groups, each followed by its decoding in English built from the same
values; `weather_doc` and `taf_doc` make documents of a few of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from flightmind.radio.traffic import AIRPORTS, Airport
from flightmind.demo.weather import (
    PHENOMENON, Weather, angle_between, random_weather, runway_heading, sentence, sky_code, sky_words,
    temp_code, temp_words, vis_words, weather_code, weather_words, whole_degrees, wind_components, wx_words,
)


@dataclass
class Observation:
    airport: Airport
    day: int
    time: str  # "1751"
    weather: Weather
    temp: int  # tenths of a degree Celsius
    dew: int
    altimeter: int  # hundredths of an inch of mercury
    special: bool = False


def random_observation(rng: random.Random, airport: Airport | None = None) -> Observation:
    airport = airport or rng.choice(AIRPORTS)
    temp = rng.randint(-250, 380)
    w, (lo, hi) = random_weather(rng, whole_degrees(temp))
    dew = temp - rng.randint(lo, hi)
    temp, dew = (-5 if -5 < t < 0 else t for t in (temp, dew))  # keep "M00" (-0.4 to -0.1) out of the corpus
    special = rng.random() < 0.12
    time = f"{rng.randrange(24):02d}{rng.randrange(60) if special else rng.choice([51, 53, 56]):02d}"
    altimeter = min(3080, max(2900, round(rng.gauss(2992, 22))))
    return Observation(airport, rng.randint(1, 28), time, w, temp, dew, altimeter, special)


def best_runway(rng: random.Random, airport: Airport, w: Weather) -> str:
    if w.wind_kt == 0 or w.variable:
        return rng.choice(airport.runways)
    return min(airport.runways, key=lambda r: (angle_between(w.wind_dir, runway_heading(r)), r))


def metar_text(rng: random.Random, obs: Observation) -> str:
    """A METAR or SPECI line, then its decoding in English built from the same values."""
    w, minute = obs.weather, int(obs.time[2:])
    rmk, rmk_words = ["AO2"], ["automated station with a precipitation discriminator"]
    if w.gust_kt and w.gust_kt >= 25:
        peak, at = w.gust_kt + rng.randint(0, 6), rng.randrange(minute + 1)
        rmk.append(f"PK WND {w.wind_dir:03d}{peak:02d}/{at:02d}")
        rmk_words.append(f"peak wind {w.wind_dir:03d} degrees at {peak} knots at {at} minutes past the hour")
    for code in w.wx:
        began = rng.randrange(minute + 1)
        if "TS" in code and "VC" not in code:
            rmk.append(f"TSB{began:02d} OCNL LTGICCG OHD")
            rmk_words.append(f"thunderstorm began at {began} minutes past the hour, "
                             "occasional lightning in cloud and cloud to ground overhead")
        elif code.lstrip("-+") in ("RA", "SN", "DZ") and rng.random() < 0.5:
            rmk.append(f"{code.lstrip('-+')}B{began:02d}")
            rmk_words.append(f"{PHENOMENON[code.lstrip('-+')]} began at {began} minutes past the hour")
    slp = round(obs.altimeter * 3.38639)  # inches of mercury (x100) to hectopascals (x10)
    rmk.append(f"SLP{slp % 1000:03d}")
    rmk_words.append(f"sea-level pressure {slp / 10:.1f} hectopascals")
    tgroup = "".join(("1" if t < 0 else "0") + f"{abs(t):03d}" for t in (obs.temp, obs.dew))
    rmk.append(f"T{tgroup}")
    rmk_words.append(
        f"temperature {temp_words(obs.temp, True)} and dew point {temp_words(obs.dew, True)} degrees Celsius"
    )

    kind = "SPECI" if obs.special else "METAR"
    coded = " ".join([
        kind, obs.airport.icao, f"{obs.day:02d}{obs.time}Z", *weather_code(w),
        f"{temp_code(obs.temp)}/{temp_code(obs.dew)}", f"A{obs.altimeter}", "RMK", *rmk,
    ])
    report = "special report" if obs.special else "routine report"
    where = f"{obs.airport.icao} ({obs.airport.name}, {obs.airport.city})"
    decoded = [f"{where}, {report} on day {obs.day} at {obs.time} UTC."]
    decoded += [sentence(p) for p in weather_words(w)]
    decoded.append(
        f"Temperature {temp_words(obs.temp)} degrees Celsius, dew point {temp_words(obs.dew)} degrees Celsius."
    )
    decoded.append(f"Altimeter {obs.altimeter / 100:.2f} inches of mercury.")
    decoded.append(sentence("remarks: " + "; ".join(rmk_words)))
    ceiling = f"ceiling {w.ceiling:,} feet" if w.ceiling else "no ceiling"
    decoded.append(f"Flight category {w.category} ({ceiling}, {vis_words(w)}).")
    if w.wind_kt and not w.variable and rng.random() < 0.6:
        rwy = best_runway(rng, obs.airport, w)
        cross, head, side = wind_components(w.wind_dir, w.wind_kt, rwy)
        decoded.append(
            f"Runway {rwy} is best aligned with the wind: {cross} knots of crosswind from the {side} "
            f"and {abs(head)} knots of {'headwind' if head >= 0 else 'tailwind'}."
        )
    return coded + "\n" + " ".join(decoded)


def taf_text(rng: random.Random) -> str:
    """A TAF with change groups, then a period-by-period decoding."""
    airport = rng.choice(AIRPORTS)
    temp = rng.randint(-20, 34)
    day, issue_hour = rng.randint(1, 27), rng.choice([5, 11, 17, 23])
    start = day * 24 + issue_hour + 1  # hours since the start of the month
    end = start + rng.choice([24, 30])

    def dd_hh(t: int) -> str:
        d, h = divmod(t, 24)
        return f"{d - 1:02d}24" if h == 0 else f"{d:02d}{h:02d}"

    def when(t: int) -> str:
        d, h = divmod(t, 24)
        return f"day {d - 1} at 2400 UTC" if h == 0 else f"day {d} at {h:02d}00 UTC"

    base, _ = random_weather(rng, temp)
    coded = [f"TAF {airport.icao} {day:02d}{issue_hour:02d}30Z {dd_hh(start)}/{dd_hh(end)} "
             + " ".join(weather_code(base, taf=True))]

    decoded = [
        f"Terminal forecast for {airport.icao} ({airport.name}, {airport.city}), issued on day {day} at "
        f"{issue_hour:02d}30 UTC, valid from {when(start)} until {when(end)}.",
        sentence("initially " + "; ".join(weather_words(base, taf=True))),
    ]
    t = start
    for _ in range(rng.randint(1, 4)):
        t += rng.randint(3, 7)
        if t >= end - 2:
            break
        w, _ = random_weather(rng, temp)
        if rng.random() < 0.65:
            d, h = divmod(t, 24)
            coded.append(f"FM{d:02d}{h:02d}00 " + " ".join(weather_code(w, taf=True)))
            decoded.append(sentence(f"from day {d} at {h:02d}00 UTC, " + "; ".join(weather_words(w, taf=True))))
        else:
            until = min(t + rng.randint(2, 4), end)
            prob = rng.choice(["TEMPO", "TEMPO", "PROB30", "PROB40"])
            groups = [f"{w.vis}SM" if w.visibility <= 6 else "P6SM", *w.wx, *sky_code(w, taf=True)]
            coded.append(f"{prob} {dd_hh(t)}/{dd_hh(until)} " + " ".join(groups))
            lead = "temporarily" if prob == "TEMPO" else f"{prob[4:]} percent probability"
            parts = [vis_words(w, taf=True)] + [wx_words(c) for c in w.wx] + [sky_words(w, taf=True)]
            decoded.append(sentence(f"{lead} between {when(t)} and {when(until)}, " + "; ".join(parts)))
    return "\n     ".join(coded) + "\n" + "\n".join(decoded)


def weather_doc(rng: random.Random) -> str:
    """A few METARs (sometimes with a TAF), each followed by its decoding."""
    heading = rng.choice([
        "Surface observations", "Current weather along the route", "Preflight weather briefing: observations",
        "Observations with decoded reports", "Hourly observations for the area", "Weather check before departure",
    ])
    reports = [metar_text(rng, random_observation(rng)) for _ in range(rng.choice([1, 1, 2, 3, 4]))]
    if rng.random() < 0.25:
        reports.append(taf_text(rng))
    return heading + "\n\n" + "\n\n".join(reports)


def taf_doc(rng: random.Random) -> str:
    heading = rng.choice(["Terminal aerodrome forecast", "TAF and decoded forecast", "Destination forecast"])
    return heading + "\n\n" + "\n\n".join(taf_text(rng) for _ in range(rng.choice([1, 1, 2])))
