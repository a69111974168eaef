"""The demo corpus: synthetic aviation text and Python docstrings, generated offline from a seed so
that the smoke config runs on any machine (`build_demo_corpus` in corpus.py). It exercises the
pipeline and shows a falling loss; it is not training data for a useful model.

The tables the generators draw from (checklists, handbook facts, ...) are JSON files in tables/.
"""

from __future__ import annotations

import json
from importlib import resources


def demo_table(name: str) -> dict:
    """The JSON table ``tables/<name>.json`` shipped with this package."""
    return json.loads(resources.files(__package__).joinpath("tables", f"{name}.json").read_text(encoding="utf-8"))
