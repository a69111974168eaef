"""Handbook-style worked examples for the demo corpus: crosswind components, density altitude, fuel
and descent planning, wind correction, turns, true airspeed, cloud bases, VFR cruising altitudes and
weight and balance, each with its numbers computed, sometimes followed by a few general facts
(tables/handbook.json).
"""

from __future__ import annotations

import math
import random

from flightmind.radio.traffic import AIRPORTS
from flightmind.demo import demo_table
from flightmind.demo.weather import angle_between, density_altitude, runway_heading, wind_components

HANDBOOK_FACTS: list[str] = demo_table("handbook")["facts"]


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
