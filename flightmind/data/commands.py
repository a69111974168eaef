"""`flightmind synth-commands`: synthetic cockpit commands for instruction fine-tuning.

    flightmind synth-commands --n 55000 --out data/finetune/synthetic_commands.jsonl [--seed 0]

Nine categories, as the spec lists them for AIDA: heading, altitude, airspeed, vertical speed, radio
frequency, transponder code, flaps, landing gear and autopilot/navigation mode. Each record is a chat
(see chat.py): the FlightMind system prompt, a command in the spoken form pilots and controllers use
("turn heading three six zero", "climb and maintain flight level two four zero", "squawk seven seven
zero zero"), and the assistant's answer, a JSON action line then a readback::

    {"action": "heading", "value": 360}
    Roger, turning to heading 360.

The same seed writes the same file. Categories take turns in a shuffled order, so each holds n/9 of
the records (±1); values are drawn from their valid ranges (``VALUES``).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from flightmind.atomic import write_jsonl
from flightmind.data.chat import DEFAULT_SYSTEM_PROMPT
from flightmind.radio.phraseology import say, say_altitude, say_heading, words
from flightmind.radio.traffic import AIRPORTS, random_flight
from flightmind.errors import FlightMindError

# Valid values of each category: the generator draws from these and the tests check against them.
VALUES = {
    "heading": range(5, 361, 5),  # degrees magnetic; 360 is north, 000 is not said
    "altitude": [*range(2000, 18000, 500), *range(18000, 41001, 1000)],  # feet; flight levels from FL180
    "airspeed": range(80, 341, 5),  # knots indicated
    "vertical_speed": [s * v for v in range(500, 4001, 100) for s in (1, -1)],  # feet per minute, descent < 0
    "frequency": range(118000, 136976, 25),  # kHz: the VHF com band on the 25 kHz grid
    "squawk": tuple(f"{code:04o}" for code in range(8**4)),  # four octal digits, as written
    "flaps": (0, 5, 10, 15, 20, 25, 30, 40),  # degrees
    "gear": ("down", "up"),
    "autopilot": ("on", "off", "HDG", "NAV", "APR", "ALT", "VS", "LNAV", "VNAV", "LOC"),
}
CATEGORIES = tuple(VALUES)
EMERGENCY_CODES = ("7500", "7600", "7700")  # hijack, radio failure, emergency: drawn more often


def _thousands_words(n: int) -> str:
    """1500 -> "one thousand five hundred"; 800 -> "eight hundred"."""
    thousands, hundreds = divmod(n, 1000)
    spoken = [f"{words(thousands)} thousand"] if thousands else []
    if hundreds:
        spoken.append(f"{words(hundreds // 100)} hundred")
    return " ".join(spoken)


def _altitude_written(feet: int) -> str:
    return f"flight level {feet // 100}" if feet >= 18000 else f"{feet:,} feet"


def _frequency_written(khz: int) -> str:
    """124350 -> "124.35", 121900 -> "121.9", 119025 -> "119.025", 118000 -> "118.0"."""
    mhz, rest = divmod(khz, 1000)
    return f"{mhz}." + (f"{rest:03d}".rstrip("0") or "0")


def heading(rng: random.Random) -> tuple[str, dict, str]:
    value = rng.choice(VALUES["heading"])
    spoken, written = say_heading(value), f"{value:03d}"
    turn = rng.choice(["left", "right", None, None])
    if turn:
        command = rng.choice([f"turn {turn} heading {spoken}", f"come {turn} heading {spoken}", f"turn {turn} to {spoken}"])
        return command, {"action": "heading", "value": value, "direction": turn}, f"Roger, turning {turn} to heading {written}."
    command = rng.choice([f"turn heading {spoken}", f"fly heading {spoken}", f"set heading {spoken}", f"heading {spoken}"])
    return command, {"action": "heading", "value": value}, f"Roger, turning to heading {written}."


def altitude(rng: random.Random) -> tuple[str, dict, str]:
    value = rng.choice(VALUES["altitude"])
    spoken, written = say_altitude(value), _altitude_written(value)
    verb = rng.choice(["climb", "descend", "maintain"])
    if verb == "maintain":
        command = rng.choice([f"maintain {spoken}", f"set altitude {spoken}", f"level off at {spoken}"])
        return command, {"action": "altitude", "value": value}, f"Roger, maintaining {written}."
    command = rng.choice([f"{verb} and maintain {spoken}", f"{verb} to {spoken}", f"{verb} {spoken}"])
    return command, {"action": "altitude", "value": value}, f"Roger, {verb}ing to {written}."


def airspeed(rng: random.Random) -> tuple[str, dict, str]:
    value = rng.choice(VALUES["airspeed"])
    spoken = say(str(value))
    verb, readback = rng.choice([("reduce speed to", "reducing speed to"), ("increase speed to", "increasing speed to"),
                                 ("maintain", "maintaining"), ("set airspeed", "setting airspeed"), ("speed", "speed")])
    knots = rng.choice([" knots", ""])
    return f"{verb} {spoken}{knots}", {"action": "airspeed", "value": value}, f"Roger, {readback} {value} knots."


def vertical_speed(rng: random.Random) -> tuple[str, dict, str]:
    value = rng.choice(VALUES["vertical_speed"])
    amount = _thousands_words(abs(value))
    direction = "climb" if value > 0 else "descend"
    command = rng.choice([
        f"{direction} at {amount} feet per minute",
        f"{direction} at {amount} feet a minute",
        f"vertical speed {amount} {'up' if value > 0 else 'down'}",
        f"set vertical speed {'plus' if value > 0 else 'minus'} {amount}",
    ])
    return command, {"action": "vertical_speed", "value": value}, f"Roger, {direction}ing at {abs(value):,} feet per minute."


def frequency(rng: random.Random) -> tuple[str, dict, str]:
    khz = rng.choice(VALUES["frequency"])
    written = _frequency_written(khz)
    spoken = say(written)
    airport = rng.choice(AIRPORTS)
    facility = rng.choice([f"{airport.center} Center", f"{airport.approach} Approach", f"{airport.approach} Departure",
                           f"{airport.name} Tower", f"{airport.name} Ground"])
    action = {"action": "frequency", "value": khz / 1000}
    if rng.random() < 0.5:
        command = rng.choice([f"contact {facility} {spoken}", f"contact {facility} on {spoken}", f"monitor {facility} {spoken}"])
        return command, action, f"Roger, contacting {facility} on {written}."
    command = rng.choice([f"tune {spoken}", f"set com one to {spoken}", f"switch to {spoken}", f"frequency {spoken}"])
    return command, action, f"Roger, tuning {written}."


def squawk(rng: random.Random) -> tuple[str, dict, str]:
    written = rng.choice(EMERGENCY_CODES) if rng.random() < 0.1 else rng.choice(VALUES["squawk"])
    spoken = say(written)
    command = rng.choice([f"squawk {spoken}", f"squawk {spoken} and ident", f"set transponder to {spoken}",
                          f"reset transponder {spoken}"])
    return command, {"action": "squawk", "value": written}, f"Roger, squawking {written}."


def flaps(rng: random.Random) -> tuple[str, dict, str]:
    value = rng.choice(VALUES["flaps"])
    if value == 0:
        command = rng.choice(["flaps up", "retract the flaps", "flaps zero", "set flaps up"])
        return command, {"action": "flaps", "value": 0}, "Roger, flaps up."
    spoken = words(value)
    command = rng.choice([f"flaps {spoken}", f"set flaps {spoken}", f"flaps to {spoken}", f"select flaps {spoken}"])
    return command, {"action": "flaps", "value": value}, f"Roger, flaps {value}."


def gear(rng: random.Random) -> tuple[str, dict, str]:
    value = rng.choice(VALUES["gear"])
    if value == "down":
        command = rng.choice(["gear down", "landing gear down", "extend the landing gear", "put the gear down"])
    else:
        command = rng.choice(["gear up", "landing gear up", "retract the gear", "raise the landing gear"])
    return command, {"action": "gear", "value": value}, f"Roger, gear {value}."


_AUTOPILOT = {  # value: (spoken forms, readback)
    "on": (["engage the autopilot", "autopilot on", "autopilot engage"], "autopilot engaged"),
    "off": (["disconnect the autopilot", "autopilot off", "autopilot disengage"], "autopilot disconnected"),
    "HDG": (["heading mode", "engage heading mode", "select heading mode"], "heading mode"),
    "NAV": (["nav mode", "engage nav mode", "arm nav"], "nav mode armed"),
    "APR": (["arm approach mode", "approach mode", "arm the approach"], "approach mode armed"),
    "ALT": (["altitude hold", "engage altitude hold", "hold altitude"], "altitude hold"),
    "VS": (["vertical speed mode", "engage vertical speed mode", "select v s mode"], "vertical speed mode"),
    "LNAV": (["engage l nav", "l nav on", "arm lateral navigation"], "LNAV engaged"),
    "VNAV": (["engage v nav", "v nav on", "arm vertical navigation"], "VNAV engaged"),
    "LOC": (["arm the localizer", "localizer mode", "arm localizer"], "localizer armed"),
}


def autopilot(rng: random.Random) -> tuple[str, dict, str]:
    value = rng.choice(VALUES["autopilot"])
    forms, readback = _AUTOPILOT[value]
    return rng.choice(forms), {"action": "autopilot", "value": value}, f"Roger, {readback}."


GENERATORS: dict[str, Callable[[random.Random], tuple[str, dict, str]]] = {
    "heading": heading, "altitude": altitude, "airspeed": airspeed, "vertical_speed": vertical_speed,
    "frequency": frequency, "squawk": squawk, "flaps": flaps, "gear": gear, "autopilot": autopilot,
}


def command_record(rng: random.Random, category: str) -> dict:
    command, action, readback = GENERATORS[category](rng)
    if rng.random() < 0.3:  # addressed like a controller's instruction
        command = f"{random_flight(rng).short}, {command}"
    answer = f"{json.dumps(action)}\n{readback}"
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": command},
        {"role": "assistant", "content": answer},
    ]
    return {"messages": messages, "category": category}


def generate_commands(n: int, seed: int = 0) -> list[dict]:
    """``n`` command records; categories take turns in an order reshuffled every nine records."""
    rng = random.Random(seed)
    records, order = [], list(CATEGORIES)
    for i in range(n):
        if i % len(order) == 0:
            rng.shuffle(order)
        records.append(command_record(rng, order[i % len(order)]))
    return records


def write_commands(path: str | Path, n: int, seed: int = 0) -> Counter:
    """Write ``n`` records to ``path`` atomically; returns the count per category."""
    records = generate_commands(n, seed)
    write_jsonl(Path(path), records)
    return Counter(r["category"] for r in records)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=55000, help="number of records (default: %(default)s, the spec's)")
    parser.add_argument("--out", required=True, metavar="FILE.jsonl", help="output JSONL file of chat records")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same file (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise FlightMindError(f"--n must be at least 1, got {args.n}")
    if Path(args.out).is_dir():
        raise FlightMindError(f"--out {args.out} is a directory: name the JSONL file to write, e.g. {Path(args.out) / 'commands.jsonl'}")
    counts = write_commands(args.out, args.n, args.seed)
    per_category = ", ".join(f"{category} {counts[category]:,}" for category in CATEGORIES)
    print(f"wrote {args.n:,} commands to {args.out} ({per_category})")
    return 0
