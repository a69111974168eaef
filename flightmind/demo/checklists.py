"""GA checklists for the demo corpus: a few normal checklists that follow one another, or a few
emergency ones, for one aircraft type, with its speeds filled in and only the items its features
(carburetor, fuel pump, retractable gear, constant-speed propeller) call for. Tables: tables/checklists.json.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from flightmind.demo import demo_table


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


_TABLE = demo_table("checklists")
CHECKLIST_AIRCRAFT = [Aircraft(**dict(row, features=tuple(row["features"]))) for row in _TABLE["aircraft"]]
CHECKLISTS: dict[str, list[list[str]]] = _TABLE["checklists"]  # name: [[feature needed or "", item, action]]
CHECKLIST_FLOWS: list[list[str]] = _TABLE["flows"]  # normal checklists that follow one another
EMERGENCIES = [name for name in CHECKLISTS if re.search("Fire|Failure|Emergency|Icing", name)]
NOTES: dict[str, str] = _TABLE["notes"]


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
