"""Weather for the demo corpus: one set of random but self-consistent values (wind, visibility,
present weather, clouds, temperatures), coded as METAR/TAF groups and decoded into plain English,
plus the wind's components along a runway and the density altitude.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from fractions import Fraction


# METAR/TAF codes in words; layers are reported in the order of COVER.
COVER = {
    "FEW": "few clouds", "SCT": "scattered clouds", "BKN": "broken clouds", "OVC": "overcast",
    "VV": "vertical visibility",
}
INTENSITY = {"-": "light", "+": "heavy"}
DESCRIPTOR = {"TS": "thunderstorm", "SH": "showers", "FZ": "freezing", "BL": "blowing"}
PHENOMENON = {
    "RA": "rain", "SN": "snow", "DZ": "drizzle", "BR": "mist", "FG": "fog", "HZ": "haze", "GR": "hail",
    "PL": "ice pellets",
}
VIS_WORDS = {"1/8": "one eighth", "1/4": "one quarter", "1/2": "one half", "3/4": "three quarters"}


@dataclass
class Weather:
    wind_dir: int  # degrees true; 0 with wind_kt 0 is calm
    wind_kt: int
    gust_kt: int | None = None
    variable: bool = False  # VRB: direction too variable to report
    vary: tuple[int, int] | None = None  # "240V300"
    vis: str = "10"  # statute miles as written: "10", "1 1/2", "1/4"
    wx: list[str] = field(default_factory=list)  # "-RA", "TSRA", "BR"
    clouds: list[tuple[str, int, str]] = field(default_factory=list)  # (cover, hundreds of feet, "CB"/"")

    @property
    def visibility(self) -> Fraction:
        return sum((Fraction(p) for p in self.vis.split()), Fraction(0))

    @property
    def ceiling(self) -> int | None:
        """Height in feet of the lowest broken, overcast or obscured layer."""
        return next((h * 100 for cover, h, _ in self.clouds if cover in ("BKN", "OVC", "VV")), None)

    @property
    def category(self) -> str:
        ceiling, vis = self.ceiling or 99999, self.visibility
        if ceiling < 500 or vis < 1:
            return "LIFR"
        if ceiling < 1000 or vis < 3:
            return "IFR"
        if ceiling <= 3000 or vis <= 5:
            return "MVFR"
        return "VFR"


def _layers(rng, n_max: int, lo: int, hi: int, covers: str, cb: bool = False) -> list[tuple[str, int, str]]:
    """Up to n_max cloud layers between lo and hi hundred feet, in reportable increments, never above an overcast."""
    heights = set()
    for _ in range(rng.randint(1, n_max)):
        h = rng.randint(lo, hi)
        heights.add(h if h <= 50 else h // 5 * 5 if h <= 100 else h // 10 * 10)
    order = list(COVER)
    choices = sorted((rng.choice(covers.split()) for _ in heights), key=order.index)
    layers = []
    for cover, h in zip(choices, sorted(heights)):
        layers.append((cover, h, ""))
        if cover == "OVC":
            break
    if cb:
        i = rng.randrange(len(layers))
        layers[i] = (layers[i][0], layers[i][1], "CB")
    return layers


def _intensity(rng) -> str:
    return rng.choice(["-", "-", "", "+"])


def random_weather(rng: random.Random, temp_c: int) -> tuple[Weather, tuple[int, int]]:
    """Weather consistent with the temperature, and the plausible dew point spread range in tenths of a degree."""
    if rng.random() < 0.08:
        w = Weather(0, 0)
    elif rng.random() < 0.08:
        w = Weather(0, rng.randint(2, 5), variable=True)
    else:
        speed = round(rng.triangular(3, 32, 8))
        gust = speed + rng.randint(6, 15) if speed >= 10 and rng.random() < 0.35 else None
        w = Weather(rng.randrange(10, 361, 10), speed, gust)
        if speed >= 7 and rng.random() < 0.15:
            half = rng.choice([30, 40, 50])
            w.vary = ((w.wind_dir - half) % 360 or 360, (w.wind_dir + half) % 360 or 360)

    regimes = ["clear", "fair", "fair", "cloudy", "cloudy", "mist"]
    regimes += ["rain", "rain", "drizzle", "fog"] if temp_c >= 1 else []
    regimes += ["snow", "snow"] if temp_c <= 1 else []
    regimes += ["freezing"] if -10 <= temp_c <= 0 else []
    regimes += ["thunder", "thunder", "haze"] if temp_c >= 12 else []
    regime = rng.choice(regimes)
    spread = (30, 180)
    if regime == "clear":
        spread = (40, 200)
    elif regime == "fair":
        w.clouds = _layers(rng, 3, 25, 250, "FEW SCT")
    elif regime == "cloudy":
        w.vis = rng.choice(["10", "10", "10", "7", "6"])
        w.clouds = _layers(rng, 3, 15, 120, "SCT BKN BKN OVC")
        w.wx = ["BR"] if w.vis == "6" else []
        spread = (10, 40) if w.wx else (20, 90)
    elif regime == "mist":
        w.vis = rng.choice(["3/4", "1", "1 1/2", "2", "3", "4", "5", "6"])
        w.wx = ["BR"]
        w.clouds = _layers(rng, 2, 2, 15, "BKN OVC")
        spread = (0, 15)
    elif regime == "fog":
        w.vis = rng.choice(["1/8", "1/4", "1/4", "1/2"])
        w.wx = ["FG"]
        w.clouds = [("VV", rng.randint(1, 3), "")] if rng.random() < 0.5 else [("OVC", rng.randint(1, 4), "")]
        spread = (0, 8)
    elif regime == "drizzle":
        w.vis = rng.choice(["2", "3", "4", "5"])
        w.wx = [rng.choice(["-DZ", "-DZ", "DZ"]), "BR"]
        w.clouds = _layers(rng, 2, 3, 12, "BKN OVC")
        spread = (0, 15)
    elif regime == "haze":
        w.vis = rng.choice(["3", "4", "5", "6"])
        w.wx = ["HZ"]
        w.clouds = _layers(rng, 1, 80, 250, "FEW SCT") if rng.random() < 0.5 else []
        spread = (80, 220)
    elif regime == "rain":
        level = _intensity(rng)
        vis = {"-": ["10", "9", "7", "6", "5", "4"], "": ["5", "4", "3", "2 1/2", "2"], "+": ["1 1/2", "1", "3/4"]}
        w.vis = rng.choice(vis[level])
        w.wx = [level + rng.choice(["RA", "RA", "SHRA"])] + (["BR"] if w.visibility < 7 and rng.random() < 0.6 else [])
        w.clouds = _layers(rng, 3, 6 if level == "-" else 4, 40, "SCT BKN OVC OVC")
        spread = (0, 30)
    elif regime == "snow":
        level = _intensity(rng)
        vis = {"-": ["5", "4", "3", "2 1/2", "2", "1 3/4", "1 1/2"], "": ["1 1/4", "1", "3/4"], "+": ["1/2", "1/4"]}
        w.vis = rng.choice(vis[level])
        w.wx = [level + rng.choice(["SN", "SN", "SHSN"])]
        w.clouds = [("VV", rng.randint(2, 8), "")] if level == "+" else _layers(rng, 2, 5, 30, "BKN OVC")
        spread = (5, 40)
    elif regime == "freezing":
        code = rng.choice(["-FZRA", "-FZDZ", "FZFG"])
        w.vis = rng.choice(["1/4", "1/2"]) if code == "FZFG" else rng.choice(["2", "3", "4", "5"])
        w.wx = [code] if code == "FZFG" else [code, "BR"]
        w.clouds = _layers(rng, 2, 2 if code == "FZFG" else 5, 15, "BKN OVC")
        spread = (0, 20)
    elif regime == "thunder":
        code = rng.choice(["TSRA", "-TSRA", "+TSRA", "VCTS", "TS"])
        vis = {"TSRA": ["3", "2", "1 1/2"], "-TSRA": ["6", "5", "4", "3"], "+TSRA": ["1", "3/4", "1/2"]}
        w.vis = rng.choice(vis.get(code, ["10", "7", "6"]))
        w.wx = [code] + (["BR"] if code == "TSRA" and rng.random() < 0.4 else [])
        w.clouds = _layers(rng, 3, 25, 60, "FEW SCT BKN", cb=True)
        spread = (10, 60)
    return w, spread


def wind_code(w: Weather) -> str:
    if w.wind_kt == 0:
        return "00000KT"
    direction = "VRB" if w.variable else f"{w.wind_dir:03d}"
    return f"{direction}{w.wind_kt:02d}" + (f"G{w.gust_kt:02d}" if w.gust_kt else "") + "KT"


def sky_code(w: Weather, taf: bool = False) -> list[str]:
    if not w.clouds:
        return ["SKC" if taf else "CLR"]
    return [f"{cover}{h:03d}{cb}" for cover, h, cb in w.clouds]


def weather_code(w: Weather, taf: bool = False) -> list[str]:
    vis = "P6SM" if taf and w.visibility > 6 else f"{w.vis}SM"
    vary = [f"{w.vary[0]:03d}V{w.vary[1]:03d}"] if w.vary and not taf else []
    return [wind_code(w), *vary, vis, *w.wx, *sky_code(w, taf)]


def wind_words(w: Weather) -> str:
    if w.wind_kt == 0:
        return "wind calm"
    if w.variable:
        return f"wind variable at {w.wind_kt} knots"
    text = f"wind from {w.wind_dir:03d} degrees at {w.wind_kt} knots"
    if w.gust_kt:
        text += f" gusting {w.gust_kt} knots"
    if w.vary:
        text += f", varying between {w.vary[0]:03d} and {w.vary[1]:03d} degrees"
    return text


def vis_words(w: Weather, taf: bool = False) -> str:
    if taf and w.visibility > 6:
        return "visibility more than 6 statute miles"
    return f"visibility {w.vis} statute {'mile' if w.visibility <= 1 else 'miles'}"


def wx_words(code: str) -> str:
    """Decode one present-weather group: "-TSRA" -> "thunderstorm with light rain"."""
    level = INTENSITY.get(code[0], "")
    code = code.lstrip("-+")
    vicinity = code.startswith("VC")
    code = code.removeprefix("VC")
    desc = code[:2] if code[:2] in DESCRIPTOR else ""
    rest = code[len(desc):]
    what = " and ".join(PHENOMENON[rest[i:i + 2]] for i in range(0, len(rest), 2))
    if desc == "TS":
        text = "thunderstorm" + (f" with {level} {what}".replace("  ", " ") if what else "")
    elif desc == "SH":
        text = f"{level} {what} showers".strip()
    else:
        text = " ".join(part for part in (level, DESCRIPTOR.get(desc, ""), what) if part)
    return text + (" in the vicinity" if vicinity else "")


def sky_words(w: Weather, taf: bool = False) -> str:
    if not w.clouds:
        return "sky clear" if taf else "sky clear below 12,000 feet"
    parts = []
    for cover, h, cb in w.clouds:
        kind = " (cumulonimbus)" if cb else ""
        if cover == "VV":
            parts.append(f"vertical visibility {h * 100:,} feet")
        else:
            parts.append(f"{COVER[cover]} at {h * 100:,} feet{kind}")

    return ", ".join(parts)


def weather_words(w: Weather, taf: bool = False) -> list[str]:
    parts = [wind_words(w), vis_words(w, taf)]
    if w.wx:
        parts.append(" and ".join(wx_words(c) for c in w.wx))
    parts.append(sky_words(w, taf))
    return parts


def sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def whole_degrees(tenths: int) -> int:
    """Round tenths of a degree to whole degrees, halves away from zero."""
    return (abs(tenths) + 5) // 10 * (-1 if tenths < 0 else 1)


def temp_code(tenths: int) -> str:
    return ("M" if tenths < 0 else "") + f"{abs(whole_degrees(tenths)):02d}"  # "M00" for -0.4


def temp_words(tenths: int, precise: bool = False) -> str:
    value = f"{abs(tenths) / 10:.1f}" if precise else str(abs(whole_degrees(tenths)))
    return ("minus " if tenths < 0 else "") + value


def runway_heading(rwy: str) -> int:
    return int(rwy[:2]) * 10


def angle_between(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def wind_components(wind_dir: int, speed: int, rwy: str) -> tuple[int, int, str]:
    """(crosswind, headwind, side the wind comes from) for a runway, rounded to whole knots."""
    diff = math.radians(wind_dir - runway_heading(rwy))
    side = "right" if (wind_dir - runway_heading(rwy)) % 360 < 180 else "left"
    return round(abs(speed * math.sin(diff))), round(speed * math.cos(diff)), side


def density_altitude(elevation: int, altimeter: float, temp_c: float) -> tuple[int, int]:
    """(pressure altitude, density altitude) in feet, by the usual rules of thumb."""
    pressure_alt = round(elevation + (29.92 - altimeter) * 1000)
    isa = 15 - 2 * pressure_alt / 1000
    return pressure_alt, round(pressure_alt + 120 * (temp_c - isa))
