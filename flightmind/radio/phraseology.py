"""How numbers are spoken on the radio: digits one at a time ("niner"), letters in the phonetic
alphabet, altitudes in thousands and hundreds or as flight levels, headings in three digits.

Shared by the synthetic cockpit commands (commands.py) and the demo corpus (flightmind.demo).
"""

from __future__ import annotations

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
    """4500 -> "four thousand five hundred"; from 18,000 feet a flight level: "flight level two four zero"."""
    if feet >= 18000:
        return "flight level " + say(f"{feet // 100:03d}")
    thousands, rest = divmod(feet, 1000)
    spoken = [say(str(thousands)), "thousand"] if thousands else []
    if rest:
        spoken += [say(str(rest // 100)), "hundred"]
    return " ".join(spoken)


def say_runway(rwy: str) -> str:
    """ "09L" -> "niner left" (no leading zero)."""
    number, side = rwy[:2], rwy[2:]
    return say(str(int(number))) + (f" {SIDES[side]}" if side else "")


def say_heading(deg: int) -> str:
    """Three digits, north as 360: 90 -> "zero niner zero", 0 -> "three six zero"."""
    return say(f"{deg % 360 or 360:03d}")
