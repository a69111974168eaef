"""A small demo corpus that needs no network and no data, so the smoke config runs anywhere.

When the configured data directory is missing, the datamodule calls ``build_demo_corpus`` and
feeds the result to the normal ``prepare`` step (JSONL -> BPE tokenizer -> packed shards). The
files use the real data's schema, one ``{"id", "source", "text"}`` object per line, in two parts:

- ``aviation/``: synthetic documents generated from a seed: METAR and TAF reports each followed
  by a plain-English decoding computed from the same values, ATC exchanges in spoken phraseology,
  GA checklists, NTSB-style accident narratives and handbook-style worked examples;
- ``general/``: docstrings of the Python standard library, read with ``ast`` (never imported)
  from the running interpreter's sources, which gives real English prose on every install.

It is meant to exercise the pipeline and show a falling loss, not to train a useful model.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pathlib
import random
import re
import sysconfig
import tempfile
import unicodedata
from dataclasses import dataclass, field
from fractions import Fraction

AVIATION_SOURCE = "FlightMind demo corpus (synthetic aviation text, not for operational use)"
GENERAL_SOURCE = "Python standard library docstrings"


def build_demo_corpus(
    out_dir, seed: int = 0, aviation_docs: int = 1100, general_docs: int = 400
) -> dict[str, list[pathlib.Path]]:
    """Write the demo corpus as JSONL under out_dir and return {"aviation": [paths], "general": [paths]}.

    Aviation text depends only on ``seed`` (same seed, byte-identical files); the general part
    depends only on the Python version. ``general_docs`` caps the number of stdlib modules; the
    general list is empty if this interpreter ships no ``.py`` sources. The defaults give about
    1.5 MB of aviation text and, on Python 3.11, 1.2 MB of docstrings (every module that has
    any), in about 1.5 s, mostly spent parsing the stdlib.
    """

    out = pathlib.Path(out_dir)
    rng = random.Random(seed)
    kinds, weights = list(KINDS), [weight for weight, _ in KINDS.values()]
    by_kind: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for i in range(aviation_docs):
        kind = rng.choices(kinds, weights)[0]
        text = clean_text(KINDS[kind][1](rng))
        by_kind[kind].append({"id": f"demo-{kind}-{i:05d}", "source": AVIATION_SOURCE, "text": text})
    aviation = [
        write_jsonl(out / "aviation" / f"demo_{kind}.jsonl", docs) for kind, docs in by_kind.items() if docs
    ]
    general_rows = stdlib_docstrings(general_docs)
    general = [write_jsonl(out / "general" / "python_stdlib_docstrings.jsonl", general_rows)] if general_rows else []
    return {"aviation": aviation, "general": general}


# ---------------------------------------------------------------------------------------------
# Output


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Replace control, format and surrogate characters (everything `prepare` rejects) with spaces."""
    text = _ASCII_CONTROL.sub(" ", text)
    if not text.isascii():
        text = "".join(
            " " if (unicodedata.category(ch)[0] == "C" and ch not in "\n\t") or ch in "\u2028\u2029" else ch
            for ch in text
        )
    return text.strip()


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    """Write rows as JSONL atomically, so an interrupted build never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# General part: Python standard library docstrings


_SKIP_DIRS = ("test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__")


def _docstrings(node):
    """The docstring of a module, class or function, then those of the definitions in its body."""
    doc = ast.get_docstring(node)
    if doc:
        yield doc
    for child in node.body:
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _docstrings(child)


def stdlib_docstrings(max_docs: int, min_chars: int = 200) -> list[dict]:
    """One document per stdlib module: its docstrings of at least min_chars, joined by blank lines."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        paths += [pathlib.Path(dirpath, name) for name in filenames if name.endswith(".py")]
    rows = []
    for path in sorted(paths):
        if len(rows) >= max_docs:
            break
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError, RecursionError):
            continue
        text = clean_text("\n\n".join(d for d in _docstrings(tree) if len(d) >= min_chars))
        if text:
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            rows.append({"id": f"stdlib-{module}", "source": GENERAL_SOURCE, "text": text})
    return rows


# ---------------------------------------------------------------------------------------------
# Shared vocabulary: airports, spoken numbers


@dataclass(frozen=True)
class Airport:
    icao: str
    name: str
    city: str
    elevation: int  # feet
    runways: tuple[str, ...]  # runway ends, e.g. "04L"
    approach: str
    center: str


# ICAO | name as controllers say it ("Kennedy Tower") | city | elevation (ft) | runway ends | approach | center
AIRPORT_TABLE = """
KJFK | Kennedy             | New York, NY          | 13   | 04L 04R 13L 13R 22L 22R 31L 31R                         | New York       | New York
KLGA | LaGuardia           | New York, NY          | 21   | 04 13 22 31                                             | New York       | New York
KTEB | Teterboro           | Teterboro, NJ         | 9    | 01 06 19 24                                             | New York       | New York
KHPN | Westchester         | White Plains, NY      | 439  | 16 34 11 29                                             | New York       | New York
KFRG | Republic            | Farmingdale, NY       | 82   | 01 19 14 32                                             | New York       | New York
KBOS | Boston              | Boston, MA            | 20   | 04L 04R 22L 22R 09 27 15R 33L                           | Boston         | Boston
KBED | Hanscom             | Bedford, MA           | 133  | 11 29 05 23                                             | Boston         | Boston
KPHL | Philadelphia        | Philadelphia, PA      | 36   | 09L 09R 27L 27R 17 35                                   | Philadelphia   | New York
KDCA | Washington National | Arlington, VA         | 15   | 01 19 04 22 15 33                                       | Potomac        | Washington
KIAD | Dulles              | Dulles, VA            | 313  | 01L 01C 01R 19L 19C 19R 12 30                           | Potomac        | Washington
KRDU | Raleigh-Durham      | Raleigh, NC           | 435  | 05L 05R 23L 23R                                         | Raleigh        | Washington
KCLT | Charlotte           | Charlotte, NC         | 748  | 18L 18C 18R 36L 36C 36R 05 23                           | Charlotte      | Atlanta
KATL | Atlanta             | Atlanta, GA           | 1026 | 08L 08R 09L 09R 10 26L 26R 27L 27R 28                   | Atlanta        | Atlanta
KMCO | Orlando             | Orlando, FL           | 96   | 17L 17R 18L 18R 35L 35R 36L 36R                         | Orlando        | Jacksonville
KMIA | Miami               | Miami, FL             | 8    | 08L 08R 26L 26R 09 27 12 30                             | Miami          | Miami
KFXE | Executive           | Fort Lauderdale, FL   | 13   | 09 27 13 31                                             | Miami          | Miami
KPIT | Pittsburgh          | Pittsburgh, PA        | 1203 | 10L 10C 10R 28L 28C 28R 14 32                           | Pittsburgh     | Cleveland
KCLE | Cleveland           | Cleveland, OH         | 791  | 06L 06R 24L 24R 10 28                                   | Cleveland      | Cleveland
KDTW | Detroit             | Detroit, MI           | 645  | 03L 03R 21L 21R 04L 04R 22L 22R 09L 09R 27L 27R         | Detroit        | Cleveland
KORD | O'Hare              | Chicago, IL           | 672  | 09L 09C 09R 27L 27C 27R 10L 10C 10R 28L 28C 28R 04R 22L | Chicago        | Chicago
KMDW | Midway              | Chicago, IL           | 620  | 04R 22L 13C 31C                                         | Chicago        | Chicago
KDPA | DuPage              | West Chicago, IL      | 759  | 02L 02R 20L 20R 10 28 15 33                             | Chicago        | Chicago
KPWK | Chicago Executive   | Wheeling, IL          | 647  | 16 34 12 30                                             | Chicago        | Chicago
KMSP | Minneapolis         | Minneapolis, MN       | 841  | 12L 12R 30L 30R 04 22 17 35                             | Minneapolis    | Minneapolis
KSTL | Lambert             | St. Louis, MO         | 618  | 12L 12R 30L 30R 11 29 06 24                             | St. Louis      | Kansas City
KMCI | Kansas City         | Kansas City, MO       | 1026 | 01L 01R 19L 19R 09 27                                   | Kansas City    | Kansas City
KBNA | Nashville           | Nashville, TN         | 599  | 02L 02C 02R 20L 20C 20R 13 31                           | Nashville      | Memphis
KMEM | Memphis             | Memphis, TN           | 341  | 18L 18C 18R 36L 36C 36R 09 27                           | Memphis        | Memphis
KDFW | Dallas-Fort Worth   | Dallas-Fort Worth, TX | 607  | 13L 13R 31L 31R 17C 17L 17R 35C 35L 35R 18L 18R 36L 36R | Regional       | Fort Worth
KAUS | Austin              | Austin, TX            | 542  | 18L 18R 36L 36R                                         | Austin         | Houston
KIAH | Houston             | Houston, TX           | 97   | 08L 08R 26L 26R 09 27 15L 15R 33L 33R                   | Houston        | Houston
KDEN | Denver              | Denver, CO            | 5434 | 07 25 08 26 16L 16R 34L 34R 17L 17R 35L 35R             | Denver         | Denver
KAPA | Centennial          | Englewood, CO         | 5885 | 17L 17R 35L 35R 10 28                                   | Denver         | Denver
KABQ | Albuquerque         | Albuquerque, NM       | 5355 | 08 26 03 21                                             | Albuquerque    | Albuquerque
KPHX | Phoenix             | Phoenix, AZ           | 1135 | 07L 07R 25L 25R 08 26                                   | Phoenix        | Albuquerque
KSDL | Scottsdale          | Scottsdale, AZ        | 1510 | 03 21                                                   | Phoenix        | Albuquerque
KSLC | Salt Lake City      | Salt Lake City, UT    | 4227 | 16L 16R 34L 34R 17 35 14 32                             | Salt Lake City | Salt Lake
KLAS | Las Vegas           | Las Vegas, NV         | 2181 | 01L 01R 19L 19R 08L 08R 26L 26R                         | Las Vegas      | Los Angeles
KLAX | Los Angeles         | Los Angeles, CA       | 128  | 06L 06R 07L 07R 24L 24R 25L 25R                         | SoCal          | Los Angeles
KVNY | Van Nuys            | Van Nuys, CA          | 802  | 16L 16R 34L 34R                                         | SoCal          | Los Angeles
KSAN | San Diego           | San Diego, CA         | 17   | 09 27                                                   | SoCal          | Los Angeles
KCRQ | Palomar             | Carlsbad, CA          | 331  | 06 24                                                   | SoCal          | Los Angeles
KSFO | San Francisco       | San Francisco, CA     | 13   | 01L 01R 19L 19R 10L 10R 28L 28R                         | NorCal         | Oakland
KOAK | Oakland             | Oakland, CA           | 9    | 10L 10R 28L 28R 12 30                                   | NorCal         | Oakland
KPAO | Palo Alto           | Palo Alto, CA         | 7    | 13 31                                                   | NorCal         | Oakland
KLVK | Livermore           | Livermore, CA         | 400  | 07L 07R 25L 25R                                         | NorCal         | Oakland
KSEA | Seattle             | Seattle, WA           | 433  | 16L 16C 16R 34L 34C 34R                                 | Seattle        | Seattle
KBFI | Boeing Field        | Seattle, WA           | 21   | 14L 14R 32L 32R                                         | Seattle        | Seattle
KPDX | Portland            | Portland, OR          | 31   | 10L 10R 28L 28R 03 21                                   | Portland       | Seattle
PANC | Anchorage           | Anchorage, AK         | 152  | 07L 07R 25L 25R 15 33                                   | Anchorage      | Anchorage
PHNL | Honolulu            | Honolulu, HI          | 13   | 04L 04R 22L 22R 08L 08R 26L 26R                         | Honolulu       | Honolulu
"""
AIRPORTS = [
    Airport(icao, name, city, int(elevation), tuple(runways.split()), approach, center)
    for icao, name, city, elevation, runways, approach, center in (
        [cell.strip() for cell in line.split("|")] for line in AIRPORT_TABLE.strip().splitlines()
    )
]

PHONETIC = dict(zip(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "Alpha Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliett Kilo Lima Mike November "
    "Oscar Papa Quebec Romeo Sierra Tango Uniform Victor Whiskey X-ray Yankee Zulu".split(),
))
DIGITS = "zero one two three four five six seven eight niner".split()
ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
SIDES = {"L": "left", "R": "right", "C": "center"}
COMPASS = "north northeast east southeast south southwest west northwest".split()


def say(chars: str) -> str:
    """Digits and letters one at a time, as on the radio: "124.75" -> "one two four point seven five"."""
    spoken = []
    for ch in chars:
        if ch.isdigit():
            spoken.append(DIGITS[int(ch)])
        elif ch == ".":
            spoken.append("point")
        elif ch.isalpha():
            spoken.append(PHONETIC[ch.upper()])
    return " ".join(spoken)


def words(n: int) -> str:
    """0..99 in ordinary words: 47 -> "forty-seven"."""
    if n < 20:
        return ONES[n]
    return TENS[n // 10 - 2] + (f"-{ONES[n % 10]}" if n % 10 else "")


def say_altitude(feet: int) -> str:
    if feet >= 18000:
        return "flight level " + say(f"{feet // 100:03d}")
    thousands, rest = divmod(feet, 1000)
    spoken = [say(str(thousands)), "thousand"] if thousands else []
    if rest:
        spoken += [say(str(rest // 100)), "hundred"]
    return " ".join(spoken)


def say_runway(rwy: str) -> str:
    number, side = rwy[:2], rwy[2:]
    return say(str(int(number))) + (f" {SIDES[side]}" if side else "")


def say_heading(deg: int) -> str:
    return say(f"{deg % 360 or 360:03d}")


def compass(deg: float) -> str:
    return COMPASS[round(deg / 45) % 8]


def frequency(rng: random.Random, lo: float, hi: float) -> str:
    """A VHF frequency on the 50 kHz grid between lo and hi MHz, as written: "124.75", "121.9"."""
    n = rng.randrange(round(lo * 20), round(hi * 20)) * 5  # in units of 10 kHz
    text = f"{n // 100}.{n % 100:02d}"
    return text[:-1] if text.endswith("0") else text


def runway_heading(rwy: str) -> int:
    return int(rwy[:2]) * 10


def angle_between(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def wind_components(wind_dir: int, speed: int, rwy: str) -> tuple[int, int, str]:
    """(crosswind, headwind, side the wind comes from) for a runway, rounded to whole knots."""
    diff = math.radians(wind_dir - runway_heading(rwy))
    side = "right" if (wind_dir - runway_heading(rwy)) % 360 < 180 else "left"
    return round(abs(speed * math.sin(diff))), round(speed * math.cos(diff)), side


# ---------------------------------------------------------------------------------------------
# Weather: one set of values, coded as METAR/TAF and decoded into English


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


# ---------------------------------------------------------------------------------------------
# ATC exchanges


GA_TYPES = {  # type as written: names a pilot may use on the radio
    "Cessna 152": ["Cessna"], "Cessna 172N": ["Cessna", "Skyhawk"], "Cessna 172SP": ["Cessna", "Skyhawk"],
    "Cessna 182T": ["Cessna", "Skylane"], "Piper PA-28-161": ["Piper", "Cherokee", "Warrior"],
    "Piper PA-28-181": ["Piper", "Cherokee", "Archer"], "Piper PA-28R-201": ["Piper", "Arrow"],
    "Cirrus SR22": ["Cirrus"], "Diamond DA40": ["Diamond", "Diamond Star"], "Beechcraft A36": ["Bonanza", "Beech"],
    "Mooney M20J": ["Mooney"], "Piper PA-44-180": ["Seminole", "Piper"],
}
CARBURETED = ["Cessna 152", "Cessna 172N", "Piper PA-28-161", "Piper PA-28-181"]
RETRACTABLE = ["Piper PA-28R-201", "Beechcraft A36", "Mooney M20J"]
SINGLES = [t for t in GA_TYPES if t != "Piper PA-44-180"]
AIRLINES = [  # (telephony, ICAO designator, types)
    ("American", "AAL", ["Boeing 737-800", "Airbus A321"]), ("Delta", "DAL", ["Airbus A220-300", "Boeing 757-200"]),
    ("United", "UAL", ["Boeing 737 MAX 9", "Airbus A320"]), ("Southwest", "SWA", ["Boeing 737-700"]),
    ("JetBlue", "JBU", ["Airbus A320", "Embraer 190"]), ("Alaska", "ASA", ["Boeing 737-900"]),
    ("Frontier Flight", "FFT", ["Airbus A320neo"]), ("FedEx", "FDX", ["Boeing 767-300F"]),
    ("Brickyard", "RPA", ["Embraer 175"]), ("SkyWest", "SKW", ["Bombardier CRJ900", "Embraer 175"]),
]
FIXES = ["MERIT", "GREKI", "BETTE", "LENDY", "CAMRN", "WAVEY", "PARCH", "HAARP", "ROBUC", "SHAKE", "BOSOX",
         "GLOWS", "SEAVU", "OCEAN", "PIGLT", "KEPEC", "LAMMA", "ZIGGI", "JAYKE", "FRDMM", "TRUKN", "BAYST"]
VORS = ["Sparta", "Carmel", "Kennebunk", "Gardner", "Hancock", "Pottstown", "Modena", "Linden", "Woodside",
        "San Marcus", "Seal Beach", "Fillmore", "Peotone", "Badger", "Dupage", "Rockford", "Hector", "Falcon"]
PARKING = ["the FBO", "the west ramp", "transient parking", "the flight school ramp", "the north tie-downs",
           "the self-serve fuel pumps"]


@dataclass
class Flight:
    type: str
    written: str  # "N734AB", "DAL1472"
    full: str  # first contact: "Skyhawk seven three four Alpha Bravo"
    short: str  # after the controller abbreviates it: "Skyhawk four Alpha Bravo"
    jet: bool


def random_ga(rng: random.Random, types: list[str]) -> Flight:
    type_ = rng.choice(types)
    digits = rng.randint(3, 5)
    reg = str(rng.randint(1, 9)) + "".join(str(rng.randrange(10)) for _ in range(digits - 1))
    reg += "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(min(2, 5 - digits)))  # no I or O
    name = rng.choice(GA_TYPES[type_])
    return Flight(type_, "N" + reg, f"{name} {say(reg)}", f"{name} {say(reg[-3:])}", False)


def random_flight(rng: random.Random) -> Flight:
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


# ---------------------------------------------------------------------------------------------
# Checklists


@dataclass(frozen=True)
class Aircraft:
    name: str
    vr: int
    vx: int
    vy: int
    vg: int  # best glide
    vapp: int  # final approach, full flaps
    runup: int  # RPM
    mag_drop: int
    fuel_selector: str
    flaps_takeoff: str
    features: tuple[str, ...]  # "carb", "pump", "retract", "prop"


CHECKLIST_AIRCRAFT = [
    Aircraft("Cessna 172N", 55, 59, 73, 65, 65, 1700, 125, "BOTH", "0-10 DEGREES", ("carb",)),
    Aircraft("Cessna 172SP", 55, 62, 74, 68, 65, 1800, 150, "BOTH", "0-10 DEGREES", ("pump",)),
    Aircraft("Cessna 182T", 55, 63, 80, 70, 65, 1800, 175, "BOTH", "0-20 DEGREES", ("pump", "prop")),
    Aircraft("Piper PA-28-161", 55, 63, 79, 73, 63, 2000, 175, "FULLER TANK", "0-25 DEGREES", ("carb", "pump")),
    Aircraft("Piper PA-28-181", 60, 64, 76, 76, 66, 2000, 175, "FULLER TANK", "0-25 DEGREES", ("carb", "pump")),
    Aircraft("Piper PA-28R-201", 65, 78, 90, 79, 75, 2000, 175, "FULLER TANK", "0-25 DEGREES",
             ("pump", "retract", "prop")),
    Aircraft("Beechcraft A36", 70, 84, 96, 110, 80, 1700, 150, "FULLER TANK", "UP", ("pump", "retract", "prop")),
    Aircraft("Diamond DA40", 59, 66, 66, 73, 71, 2000, 175, "FULLER TANK", "T/O", ("pump",)),
]

# One item a line: "ITEM | ACTION", prefixed "feature:" when only aircraft with that feature have it.
# Actions may use the aircraft's numbers: {vr}, {vy}, {vg}, ...
CHECKLIST_TEXT = {
    "Before Engine Start": """
        Preflight inspection | COMPLETE
        Passenger briefing | COMPLETE
        Seats, belts, shoulder harnesses | ADJUST and LOCK
        Brakes | TEST and SET
        Circuit breakers | CHECK IN
        Electrical equipment | OFF
        Avionics master switch | OFF
        Fuel selector | {fuel_selector}
    """,
    "Engine Start": """
        Mixture | RICH
        carb: Carburetor heat | COLD
        prop: Propeller | HIGH RPM
        Throttle | OPEN 1/4 INCH
        Master switch | ON
        Beacon | ON
        pump: Electric fuel pump | ON
        Propeller area | CLEAR
        Ignition switch | START (release when engine starts)
        Oil pressure | CHECK (green arc within 30 seconds)
        Avionics master switch | ON
    """,
    "Before Takeoff": """
        Parking brake | SET
        Seats and seat belts | CHECK SECURE
        Flight controls | FREE and CORRECT
        Flight instruments | CHECK and SET
        Fuel quantity | CHECK
        Mixture | RICH
        Fuel selector | {fuel_selector}
        Elevator trim | SET FOR TAKEOFF
        Throttle | {runup} RPM
        Magnetos | CHECK (drop not to exceed {mag_drop} RPM on either magneto, 50 RPM differential)
        carb: Carburetor heat | CHECK for RPM drop
        prop: Propeller | EXERCISE (three cycles)
        Vacuum gauge | CHECK
        Engine instruments and ammeter | CHECK
        Throttle | CHECK IDLE, then 1000 RPM
        Wing flaps | {flaps_takeoff}
        pump: Electric fuel pump | ON
        Transponder | ALT
        Doors and windows | CLOSED and LATCHED
        Lights | AS REQUIRED
    """,
    "Normal Takeoff": """
        Wing flaps | {flaps_takeoff}
        carb: Carburetor heat | COLD
        Throttle | FULL OPEN
        Engine instruments | CHECK IN GREEN
        Elevator control | LIFT NOSE WHEEL at {vr} KIAS
        Climb speed | {vy} KIAS (Vy)
        retract: Landing gear | UP when no usable runway remains
        Wing flaps | RETRACT above 200 feet AGL
    """,
    "Short Field Takeoff": """
        Wing flaps | {flaps_takeoff}
        Brakes | APPLY
        Throttle | FULL OPEN
        Mixture | RICH (lean for maximum RPM above 3000 feet density altitude)
        Brakes | RELEASE
        Elevator control | SLIGHTLY TAIL LOW
        Climb speed | {vx} KIAS until all obstacles are cleared
        Wing flaps | RETRACT SLOWLY after reaching {vy} KIAS
    """,
    "Enroute Climb": """
        Airspeed | {vy} to {vy10} KIAS
        Throttle | FULL OPEN
        prop: Propeller | 2500 RPM
        Mixture | LEAN for smooth operation above 3000 feet
        pump: Electric fuel pump | OFF above 1000 feet AGL (check fuel pressure)
    """,
    "Cruise": """
        Power | SET (no more than 75 percent)
        prop: Propeller | 2400 RPM
        Elevator trim | ADJUST
        Mixture | LEAN
        Fuel quantity and tank selection | MONITOR
    """,
    "Descent": """
        ATIS | OBTAIN
        Altimeter | SET
        Fuel selector | {fuel_selector}
        Power | AS DESIRED
        carb: Carburetor heat | FULL HEAT AS REQUIRED to prevent icing
        Mixture | ENRICHEN as altitude decreases
        Approach briefing | COMPLETE
    """,
    "Before Landing": """
        Seats, belts, harnesses | SECURE
        Fuel selector | {fuel_selector}
        Mixture | RICH
        pump: Electric fuel pump | ON
        carb: Carburetor heat | ON (apply full heat before closing throttle)
        retract: Landing gear | DOWN (three green, no red)
        prop: Propeller | HIGH RPM
        Landing light | ON
        Autopilot | OFF
    """,
    "Normal Landing": """
        Airspeed | {vapp10} KIAS (flaps up)
        Wing flaps | AS DESIRED
        Airspeed | {vapp} KIAS (full flaps)
        retract: Landing gear | CONFIRM DOWN
        Touchdown | MAIN WHEELS FIRST
        Landing roll | LOWER NOSE WHEEL GENTLY
        Braking | MINIMUM REQUIRED
    """,
    "Balked Landing": """
        Throttle | FULL OPEN
        carb: Carburetor heat | COLD
        Wing flaps | RETRACT TO 20 DEGREES
        Climb speed | {vx} KIAS until obstacles are cleared
        retract: Landing gear | UP after positive rate of climb
        Wing flaps | RETRACT SLOWLY after reaching {vy} KIAS
    """,
    "After Landing": """
        Wing flaps | UP
        carb: Carburetor heat | COLD
        pump: Electric fuel pump | OFF
        Transponder | STANDBY
        Strobe and landing lights | OFF
    """,
    "Securing Airplane": """
        Parking brake | SET
        Avionics master switch | OFF
        Electrical equipment | OFF
        Mixture | IDLE CUTOFF (pulled full out)
        Ignition switch | OFF
        Master switch | OFF
        Control lock | INSTALL
        Hobbs and tach times | RECORD
    """,
    "Engine Failure During Takeoff Roll": """
        Throttle | IDLE
        Brakes | APPLY
        Wing flaps | RETRACT
        Mixture | IDLE CUTOFF
        Ignition switch | OFF
        Master switch | OFF
    """,
    "Engine Failure Immediately After Takeoff": """
        Airspeed | {vg} KIAS (best glide)
        Mixture | IDLE CUTOFF
        Fuel selector | OFF
        Ignition switch | OFF
        Wing flaps | AS REQUIRED
        Master switch | OFF
        Cabin door | UNLATCH
        Land | STRAIGHT AHEAD (turn only to avoid obstacles)
    """,
    "Engine Failure During Flight (Restart)": """
        Airspeed | {vg} KIAS (best glide)
        Landing site | SELECT
        Fuel selector | SWITCH TANKS or {fuel_selector}
        pump: Electric fuel pump | ON
        Mixture | RICH
        carb: Carburetor heat | ON
        Ignition switch | BOTH (or START if the propeller has stopped)
        Primer | IN and LOCKED
    """,
    "Emergency Landing Without Engine Power": """
        Airspeed | {vg} KIAS
        Seats, belts, harnesses | SECURE
        Mixture | IDLE CUTOFF
        Fuel selector | OFF
        Ignition switch | OFF
        retract: Landing gear | DOWN for a prepared surface, UP for rough terrain or water
        Wing flaps | AS REQUIRED (full flaps recommended)
        Master switch | OFF when landing is assured
        Doors | UNLATCH PRIOR TO TOUCHDOWN
        Touchdown | SLIGHTLY TAIL LOW
        Brakes | APPLY HEAVILY
    """,
    "Engine Fire In Flight": """
        Mixture | IDLE CUTOFF
        Fuel selector | OFF
        pump: Electric fuel pump | OFF
        Master switch | OFF
        Cabin heat and air | OFF (except overhead vents)
        Airspeed | 100 KIAS (increase to find a speed that gives an incombustible mixture)
        Forced landing | EXECUTE
    """,
    "Electrical Fire In Flight": """
        Master switch | OFF
        Vents, cabin air, heat | CLOSED
        Fire extinguisher | ACTIVATE
        Avionics master switch | OFF
        All other switches (except ignition) | OFF
        Vents, cabin air, heat | OPEN when the fire is out
        Land | AS SOON AS POSSIBLE
    """,
    "Alternator Failure": """
        Ammeter | CHECK
        Alternator circuit breaker | CHECK IN
        Alternator half of master switch | OFF, then ON
        Electrical load | REDUCE to the minimum required
        Land | AS SOON AS PRACTICAL
    """,
    "Inadvertent Icing Encounter": """
        Pitot heat | ON
        Course | TURN BACK or change altitude to find warmer air
        Cabin heat and defroster | FULL ON
        Throttle | INCREASE to reduce ice build-up on the propeller
        carb: Carburetor heat | ON
        Approach speed | INCREASE by 10 to 20 knots
        Wing flaps | LEAVE RETRACTED with a heavy ice load
    """,
}
CHECKLISTS = {  # name: [(feature needed or "", item, action)]
    name: [re.fullmatch(r"(?:(\w+): )?(.+) \| (.+)", line.strip()).groups(default="")
           for line in text.strip().splitlines()]
    for name, text in CHECKLIST_TEXT.items()
}

CHECKLIST_FLOWS = [  # normal checklists that follow one another
    ["Before Engine Start", "Engine Start", "Before Takeoff", "Normal Takeoff", "Enroute Climb", "Cruise"],
    ["Descent", "Before Landing", "Normal Landing", "After Landing", "Securing Airplane"],
    ["Before Takeoff", "Short Field Takeoff", "Enroute Climb"],
    ["Before Landing", "Balked Landing", "Before Landing", "Normal Landing"],
]
EMERGENCIES = [name for name in CHECKLISTS if re.search("Fire|Failure|Emergency|Icing", name)]
NOTES = {
    "Engine Failure Immediately After Takeoff":
        "Note: at low altitude, a turn back to the runway is rarely possible; the stall speed rises with bank angle.",
    "Engine Failure During Flight (Restart)":
        "Note: {vg} KIAS gives the greatest gliding distance at maximum weight; fly slightly slower when light.",
    "Emergency Landing Without Engine Power": "Note: declare an emergency on 121.5 and squawk 7700 if time allows.",
    "Engine Fire In Flight": "Note: do not attempt to restart an engine that has been on fire.",
    "Before Takeoff":
        "Note: when the magneto check shows a large drop, lean the mixture briefly to clear the plugs, then recheck.",
    "Inadvertent Icing Encounter":
        "Note: expect a higher stall speed and a longer landing roll with ice on the airframe.",
    "Normal Landing": "Note: in gusty winds, add half the gust factor to the approach speed.",
}


def checklist_doc(rng: random.Random) -> str:
    a = rng.choice(CHECKLIST_AIRCRAFT)
    values = dict(vars(a), vy10=a.vy + 10, vapp10=a.vapp + 10)
    if rng.random() < 0.6:
        flow = rng.choice(CHECKLIST_FLOWS)
        first = rng.randrange(len(flow) - 1)
        names = flow[first:first + rng.randint(2, 3)]
    else:
        names = rng.sample(EMERGENCIES, rng.randint(2, 3))
    width, numbered = rng.choice([28, 32, 36]), rng.random() < 0.5
    width = max([width] + [len(item) + 10 for name in names for _, item, _ in CHECKLISTS[name]])
    parts = [f"{a.name} checklists (typical; the approved POH/AFM governs)"]
    for name in names:
        lines = [name.upper()]
        items = [(item, action.format(**values))
                 for need, item, action in CHECKLISTS[name] if not need or need in a.features]
        for i, (item, action) in enumerate(items, 1):
            lead = f"{i}. " if numbered else ""
            lines.append(f"{lead}{item} ".ljust(width, ".") + f" {action}")
        if name in NOTES and rng.random() < 0.7:
            lines.append(NOTES[name].format(**values))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# NTSB-style narratives


MONTHS = "January February March April May June July August September October November December".split()
ZONES = {"eastern": "NY NJ MA PA VA NC GA FL OH MI", "central": "IL MN MO TN TX", "mountain": "CO NM AZ UT",
         "Pacific": "NV CA WA OR", "Alaska": "AK", "Hawaii": "HI"}


def time_zone(state: str, month: int) -> str:
    zone = next(name for name, states in ZONES.items() if state in states.split())
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


def density_altitude(elevation: int, altimeter: float, temp_c: float) -> tuple[int, int]:
    """(pressure altitude, density altitude) in feet, by the usual rules of thumb."""
    pressure_alt = round(elevation + (29.92 - altimeter) * 1000)
    isa = 15 - 2 * pressure_alt / 1000
    return pressure_alt, round(pressure_alt + 120 * (temp_c - isa))


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


# ---------------------------------------------------------------------------------------------
# Handbook-style worked examples


HANDBOOK_FACTS = [
    "An airfoil stalls when it exceeds its critical angle of attack, regardless of airspeed, attitude or power "
    "setting.",
    "A spin can occur only after the airplane stalls; recovery begins with power to idle, ailerons neutral, and "
    "full rudder opposite the rotation.",
    "Load factor in a level turn is 1 divided by the cosine of the bank angle: about 1.4 G at 45 degrees and 2 G at "
    "60 degrees.",
    "Stall speed increases with the square root of the load factor, so a 60 degree bank raises it by about 41 "
    "percent.",
    "Hypoxia is insidious: symptoms such as euphoria, headache and impaired judgment can appear well before a pilot "
    "notices them.",
    "Class B airspace requires an ATC clearance to enter; Class C and D require two-way radio communication "
    "established before entry.",
    "A VOR radial is a magnetic bearing from the station; the CDI shows whether the airplane is left or right of "
    "the selected course.",
    "Carburetor ice can form at outside air temperatures as high as 30 degrees Celsius when the humidity is high.",
    "Wake turbulence is strongest behind heavy, clean and slow aircraft; land beyond and depart before the point "
    "where the heavier aircraft rotated or touched down.",
    "Under 14 CFR 91.103, each pilot in command must become familiar with all available information concerning the "
    "flight before it begins.",
    "Day VFR flight requires fuel to the first point of intended landing plus 30 minutes at normal cruise; at night "
    "the reserve is 45 minutes.",
    "A standard-rate turn is 3 degrees per second, so a full circle takes two minutes.",
    "When the pitot tube ices over with the drain hole blocked, the airspeed indicator acts like an altimeter and "
    "reads higher as the airplane climbs.",
    "Temperature falls about 2 degrees Celsius per 1,000 feet in the standard atmosphere, from 15 degrees Celsius "
    "at sea level.",
    "A rising density altitude lengthens the takeoff roll and reduces the rate of climb because the engine, "
    "propeller and wings all have less air to work with.",
    "Flying from high pressure to low pressure without resetting the altimeter leaves the airplane lower than "
    "indicated: high to low, look out below.",
    "A stabilized approach has the airplane on the correct path, at the target speed, configured for landing, with "
    "only small corrections needed.",
    "The magnetic compass reads correctly only in straight, unaccelerated flight; in the northern hemisphere it "
    "lags in turns through north and leads through south.",
    "Frost on the wings disrupts the airflow over the upper surface and can raise the stall speed enough to prevent "
    "a takeoff.",
    "Squawk 7500 for unlawful interference, 7600 for lost communications and 7700 for an emergency.",
]


def handbook_doc(rng: random.Random) -> str:
    """Two or three worked examples with computed numbers, sometimes with general notes."""
    examples = []
    topics = ["crosswind", "density", "fuel", "descent", "wind", "turn", "tas", "cloudbase", "cruise", "weight"]
    for topic in rng.sample(topics, rng.randint(1, 3)):
        if topic == "crosswind":
            rwy = rng.choice(rng.choice(AIRPORTS).runways)
            wdir, speed = rng.randrange(10, 361, 10), rng.randint(6, 28)
            cross, head, side = wind_components(wdir, speed, rwy)
            angle = angle_between(wdir, runway_heading(rwy))
            sin, cos = math.sin(math.radians(angle)), abs(math.cos(math.radians(angle)))
            along = "headwind" if head >= 0 else "tailwind"
            examples.append(
                f"Crosswind component. Runway {rwy} has a heading of about {runway_heading(rwy):03d} degrees and the "
                f"wind is from {wdir:03d} degrees at {speed} knots, an angle of {angle:.0f} degrees. The crosswind "
                f"component is the wind speed times the sine of the angle: {speed} x {sin:.2f} = {cross} knots from "
                f"the {side}. The {along} component is the wind speed times the cosine: {speed} x {cos:.2f} = "
                f"{abs(head)} knots."
                + (" With a tailwind this strong, the opposite runway is the better choice." if head < -3 else ""))

        elif topic == "density":
            airport = rng.choice(AIRPORTS)
            altimeter, temp = rng.randint(2950, 3040) / 100, rng.randint(-5, 40)
            pa, da = density_altitude(airport.elevation, altimeter, temp)
            examples.append(
                f"Density altitude at {airport.icao}. The field elevation is {airport.elevation:,} feet and the "
                f"altimeter setting is {altimeter:.2f}. Pressure altitude is the elevation plus 1,000 feet for each "
                f"inch of mercury below 29.92: {pa:,} feet. The standard temperature at that altitude is "
                f"{15 - 2 * pa / 1000:.0f} degrees Celsius and the actual temperature is {temp} degrees, so density "
                f"altitude is about {pa:,} + 120 x ({temp} - {15 - 2 * pa / 1000:.0f}) = {da:,} feet. The airplane "
                "will perform as if it were at that altitude.")
        elif topic == "fuel":
            distance, gs, burn = rng.randint(60, 450), rng.randint(90, 170), round(rng.uniform(6, 16), 1)
            night = rng.random() < 0.4
            reserve = 45 if night else 30
            hours = distance / gs
            need = burn * (hours + reserve / 60)
            examples.append(
                f"Fuel planning. A {distance}-nautical-mile {'night' if night else 'day'} VFR flight at a "
                f"groundspeed of {gs} knots takes {distance} / {gs} = {hours:.2f} hours, or about "
                f"{round(hours * 60)} minutes. At {burn} gallons per hour that uses {burn * hours:.1f} gallons. The "
                f"required reserve is {reserve} minutes, another {burn * reserve / 60:.1f} gallons, so at least "
                f"{need:.1f} gallons must be on board before taxi and run-up fuel are added.")
        elif topic == "descent":
            cruise, field_elev, gs = rng.randrange(45, 125, 5) * 100, rng.randrange(0, 60) * 100, rng.randint(100, 180)
            pattern = field_elev + 1000
            lose = cruise - pattern
            examples.append(
                f"Descent planning. Cruising at {cruise:,} feet toward an airport with a pattern altitude of "
                f"{pattern:,} feet means losing {lose:,} feet. A 3 degree path descends about 300 feet per nautical "
                f"mile, so start down about {lose / 300:.0f} miles out. At a groundspeed of {gs} knots the matching "
                f"descent rate is about five times the groundspeed: {gs * 5} feet per minute, which takes "
                f"{lose / (gs * 5):.1f} minutes.")
        elif topic == "wind":
            course, tas = rng.randrange(0, 360, 5), rng.randint(90, 180)
            wdir, wspd = rng.randrange(10, 361, 10), rng.randint(5, 40)
            rel = math.radians(wdir - course)
            wca = math.degrees(math.asin(wspd * math.sin(rel) / tas))
            gs = tas * math.cos(math.radians(wca)) - wspd * math.cos(rel)
            examples.append(
                f"Wind correction. The true course is {course:03d} degrees, the true airspeed {tas} knots, and the "
                f"wind is from {wdir:03d} degrees at {wspd} knots. The wind correction angle is arcsin({wspd} x "
                f"sin({(wdir - course) % 360}) / {tas}) = {wca:+.0f} degrees, giving a true heading of "
                f"{round(course + wca) % 360:03d}. The groundspeed works out to {gs:.0f} knots, "
                f"{'slower' if gs < tas else 'faster'} than the true airspeed.")
        elif topic == "turn":
            tas = rng.randint(80, 250)
            bank = tas / 10 + 7
            start, through = rng.randrange(0, 360, 10), rng.choice([90, 180, 270])
            examples.append(
                f"Standard-rate turns. At {tas} knots true airspeed, the bank angle for a standard-rate turn is "
                f"about one tenth of the airspeed plus 7: {bank:.0f} degrees. A right turn from heading {start:03d} "
                f"through {through} degrees, to {(start + through) % 360 or 360:03d}, takes {through // 3} seconds "
                f"at 3 degrees per second. The load factor in that bank is {1 / math.cos(math.radians(bank)):.2f} G.")
        elif topic == "tas":
            ias, alt = rng.randint(90, 180), rng.randrange(2, 15) * 1000
            examples.append(
                "True airspeed. A rule of thumb adds 2 percent of the indicated airspeed for each 1,000 feet of "
                f"altitude. At {ias} knots indicated and {alt:,} feet, true airspeed is about {ias} x (1 + 0.02 x "
                f"{alt // 1000}) = {ias * (1 + 0.02 * alt / 1000):.0f} knots.")
        elif topic == "cloudbase":
            temp = rng.randint(5, 35)
            dew = temp - rng.randint(1, 15)
            examples.append(
                "Estimating cloud bases. In a well-mixed afternoon atmosphere the temperature and dew point "
                f"converge about 2.5 degrees Celsius per 1,000 feet. With a temperature of {temp} and a dew point of "
                f"{dew}, the spread is {temp - dew} degrees, so convective cloud bases should be near "
                f"{(temp - dew) / 2.5 * 1000:,.0f} feet above the ground.")
        elif topic == "cruise":
            course, floor = rng.randrange(0, 360), rng.randrange(3, 14) * 1000
            base = floor // 1000 + (1 if (floor // 1000) % 2 == (0 if course < 180 else 1) else 0)
            examples.append(
                "VFR cruising altitudes. Above 3,000 feet AGL, 14 CFR 91.159 asks for odd thousands plus 500 feet "
                "on magnetic courses of 0 to 179 degrees and even thousands plus 500 on courses of 180 to 359. On a "
                f"magnetic course of {course:03d} with terrain and airspace requiring at least {floor:,} feet, the "
                f"lowest appropriate altitude is {base * 1000 + 500:,} feet.")
        else:
            items = [("Empty airplane", rng.randint(1400, 1700), round(rng.uniform(38, 40), 1)),
                     ("Pilot and front passenger", rng.randint(250, 400), 37.0),
                     ("Rear passengers", rng.choice([0, rng.randint(120, 340)]), 73.0),
                     ("Fuel", rng.randint(20, 53) * 6, 48.0), ("Baggage", rng.randint(0, 120), 95.0)]
            weight = sum(wt for _, wt, _ in items)
            moment = sum(wt * arm for _, wt, arm in items)
            rows = "; ".join(f"{name} {wt} lb at {arm} in = {wt * arm:,.0f} lb-in" for name, wt, arm in items if wt)
            examples.append(
                f"Weight and balance. {rows}. The total weight is {weight:,} pounds and the total moment "
                f"{moment:,.0f} pound-inches, so the center of gravity is {moment:,.0f} / {weight:,} = "
                f"{moment / weight:.1f} inches aft of the datum. "
                + ("This exceeds a maximum gross weight of 2,550 pounds; remove fuel or baggage." if weight > 2550
                   else "The weight is within a 2,550-pound limit; check the CG against the envelope."))
    if rng.random() < 0.5:
        examples.append("Notes. " + " ".join(rng.sample(HANDBOOK_FACTS, rng.randint(2, 5))))
    return "\n\n".join(examples)


KINDS = {  # kind: (relative weight, generator)
    "metar": (5, weather_doc),
    "taf": (1, taf_doc),
    "atc": (5, atc_doc),
    "checklist": (2, checklist_doc),
    "narrative": (3, narrative_doc),
    "handbook": (2, handbook_doc),
}
