"""`build_demo_corpus`: the demo corpus as JSONL files with the real data's schema, one
``{"id", "source", "text"}`` object per line, in two parts:

- ``aviation/``: synthetic documents generated from a seed, one file per kind (``KINDS``): METAR and
  TAF reports with their decodings, ATC transcripts, checklists, accident narratives, handbook examples;
- ``general/``: docstrings of the Python standard library, read with ``ast`` (never imported) from
  the running interpreter's sources, which gives real English prose on every install.
"""

from __future__ import annotations

import ast
import os
import pathlib
import random
import re
import sysconfig
import unicodedata

from flightmind.atomic import write_jsonl
from flightmind.demo.atc import atc_doc
from flightmind.demo.checklists import checklist_doc
from flightmind.demo.handbook import handbook_doc
from flightmind.demo.narratives import narrative_doc
from flightmind.demo.reports import taf_doc, weather_doc

AVIATION_SOURCE = "FlightMind demo corpus (synthetic aviation text, not for operational use)"
GENERAL_SOURCE = "Python standard library docstrings"

KINDS = {  # kind: (relative weight, generator)
    "metar": (5, weather_doc),
    "taf": (1, taf_doc),
    "atc": (5, atc_doc),
    "checklist": (2, checklist_doc),
    "narrative": (3, narrative_doc),
    "handbook": (2, handbook_doc),
}


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
