"""The offline demo corpus: deterministic, well-formed, sized for a CPU smoke run, and self-consistent."""

import ast
import json
import re
import sysconfig
from fractions import Fraction
from pathlib import Path

import hashlib

import pytest

from flightmind.atomic import TEMP_SUFFIX
from flightmind.demo.corpus import build_demo_corpus, clean_text
from flightmind.demo.weather import wx_words

BAD_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
MB = 1_000_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The default-sized corpus, built once: {"aviation": {file name: rows}, "general": {...}}."""
    paths = build_demo_corpus(tmp_path_factory.mktemp("demo") / "nested" / "data")
    return {
        part: {p.name: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] for p in files}
        for part, files in paths.items()
    }


def all_rows(corpus):
    return [row for part in corpus.values() for rows in part.values() for row in rows]


def text_bytes(rows):
    return sum(len(row["text"].encode("utf-8")) for row in rows)


def test_same_seed_same_bytes_other_seed_other_text(tmp_path):
    a = build_demo_corpus(tmp_path / "a", seed=7, aviation_docs=150, general_docs=3)
    b = build_demo_corpus(str(tmp_path / "b"), seed=7, aviation_docs=150, general_docs=3)
    c = build_demo_corpus(tmp_path / "c", seed=8, aviation_docs=150, general_docs=3)
    assert [p.name for p in a["aviation"]] == [p.name for p in b["aviation"]]
    assert len(a["aviation"]) >= 5 and len(a["general"]) == 1
    for pa, pb in zip(a["aviation"] + a["general"], b["aviation"] + b["general"]):
        assert pa.read_bytes() == pb.read_bytes()
    other = {p.name: p.read_bytes() for p in c["aviation"]}
    for pa in a["aviation"]:
        assert pa.read_bytes() != other.get(pa.name)
    assert a["general"][0].read_bytes() == c["general"][0].read_bytes()  # the seed only drives aviation
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))


def test_same_bytes_as_before_the_tables_became_data(tmp_path):
    """The sha256 of what flightmind/data/demo.py wrote (Python 3.11) before its tables moved to JSON.

    A change here changes the corpus every existing demo run was trained on: make it on purpose and
    update the hash."""
    paths = build_demo_corpus(tmp_path, seed=3, aviation_docs=120, general_docs=0)
    assert [p.name for p in paths["aviation"]] == [
        f"demo_{kind}.jsonl" for kind in ("metar", "taf", "atc", "checklist", "narrative", "handbook")
    ]
    assert paths["general"] == []
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths["aviation"])).hexdigest()
    assert digest == "f18ceed0714a562892fd99ebe72147484f83154280e4eb3ae5bb911603869781"


def test_rows_follow_the_schema_with_unique_ids(corpus):
    rows = all_rows(corpus)
    for row in rows:
        assert set(row) == {"id", "source", "text"}
        assert all(isinstance(v, str) and v.strip() for v in row.values())
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids))
    assert sum(len(r) for r in corpus["aviation"].values()) == 1100


def test_sizes_fit_a_cpu_smoke_run(corpus):
    aviation = [row for rows in corpus["aviation"].values() for row in rows]
    general = [row for rows in corpus["general"].values() for row in rows]
    assert 1.2 * MB <= text_bytes(aviation) <= 1.9 * MB
    assert 0.5 * MB <= text_bytes(general) <= 2.5 * MB  # depends on the Python version
    assert 2.0 * MB <= text_bytes(aviation + general) <= 4.0 * MB
    n_words = sorted(len(row["text"].split()) for row in aviation)
    assert n_words[0] >= 10 and n_words[-1] <= 1000
    assert 100 <= n_words[len(n_words) // 2] <= 400
    assert len({row["text"] for row in aviation}) >= 0.99 * len(aviation)


def test_no_control_characters(corpus):
    for row in all_rows(corpus):
        assert not BAD_CHARS.search(row["text"]), row["id"]
        row["text"].encode("utf-8")  # no lone surrogates
    assert clean_text("a\x00b\x0c\rc\td\ne\x7f") == "a b  c\td\ne"
    assert clean_text(" a\x00b\x0cc\r\u2028d\ud800\u200be\x85\tf\ng ") == "a b c  d  e \tf\ng"


def category(vis: Fraction, ceiling: int | None) -> str:
    ceiling = ceiling if ceiling is not None else 99999
    if ceiling < 500 or vis < 1:
        return "LIFR"
    if ceiling < 1000 or vis < 3:
        return "IFR"
    if ceiling <= 3000 or vis <= 5:
        return "MVFR"
    return "VFR"


def test_metar_decoding_states_the_coded_values(corpus):
    """Re-parse every coded METAR and check its decoding says the same thing."""
    checked = 0
    for row in corpus["aviation"]["demo_metar.jsonl"]:
        lines = row["text"].splitlines()
        for coded, decoded in zip(lines, lines[1:]):
            if not re.match(r"(METAR|SPECI) [KP][A-Z]{3} \d{6}Z ", coded):
                continue
            checked += 1
            wind = re.search(r" (\d{3}|VRB)(\d{2})(?:G(\d{2}))?KT ", coded)
            direction, speed, gust = wind.groups()
            if (direction, speed) == ("000", "00"):
                assert "Wind calm." in decoded
            elif direction == "VRB":
                assert f"Wind variable at {int(speed)} knots." in decoded
            else:
                expected = f"Wind from {direction} degrees at {int(speed)} knots" + (f" gusting {int(gust)} knots" if gust else "")
                assert expected in decoded, (coded, decoded)

            vis = re.search(r" ((?:\d+ )?\d+(?:/\d+)?)SM ", coded).group(1)
            value = sum(Fraction(p) for p in vis.split())
            assert f"Visibility {vis} statute {'mile' if value <= 1 else 'miles'}." in decoded

            t_sign, t, d_sign, d = re.search(r" (M?)(\d\d)/(M?)(\d\d) A", coded).groups()
            assert (f"Temperature {'minus ' if t_sign else ''}{int(t)} degrees Celsius, "
                    f"dew point {'minus ' if d_sign else ''}{int(d)} degrees Celsius.") in decoded
            assert (-int(t) if t_sign else int(t)) >= (-int(d) if d_sign else int(d))

            altimeter = re.search(r" A(\d{4}) ", coded).group(1)
            assert f"Altimeter {altimeter[:2]}.{altimeter[2:]} inches of mercury." in decoded

            layers = re.findall(r" (FEW|SCT|BKN|OVC|VV)(\d{3})", coded)
            ceiling = next((int(h) * 100 for cover, h in layers if cover in ("BKN", "OVC", "VV")), None)
            assert f"Flight category {category(value, ceiling)} " in decoded
            if ceiling:
                assert f"ceiling {ceiling:,} feet" in decoded
            if " CLR " in coded:
                assert "Sky clear below 12,000 feet." in decoded
    assert checked >= 500


def test_weather_codes_decode_to_plain_english():
    assert wx_words("TSRA") == "thunderstorm with rain"
    assert wx_words("-TSRA") == "thunderstorm with light rain"
    assert wx_words("+SN") == "heavy snow"
    assert wx_words("-SHRA") == "light rain showers"
    assert wx_words("VCTS") == "thunderstorm in the vicinity"
    assert wx_words("-FZDZ") == "light freezing drizzle"
    assert wx_words("BR") == "mist"


def test_taf_change_groups_are_decoded(corpus):
    checked = 0
    for row in corpus["aviation"]["demo_taf.jsonl"]:
        text = row["text"]
        for day, hour in re.findall(r"\bFM(\d\d)(\d\d)00 ", text):
            assert f"From day {int(day)} at {hour}00 UTC, " in text
            checked += 1
        for kind, day, hour in re.findall(r"\b(TEMPO|PROB30|PROB40) (\d\d)(\d\d)/", text):
            lead = "Temporarily" if kind == "TEMPO" else f"{kind[4:]} percent probability"
            assert f"{lead} between day {int(day)} at {hour}00 UTC" in text
            checked += 1
    assert checked >= 50


def test_atc_uses_spoken_numbers(corpus):
    texts = [row["text"] for row in corpus["aviation"]["demo_atc.jsonl"]]
    joined = "\n".join(texts)
    for phrase in ("cleared for takeoff", "runway", "niner", "squawk", "point", "Ground", "Tower"):
        assert phrase in joined
    for text in texts:
        for line in text.splitlines()[1:]:
            if not line.startswith("ATIS"):
                assert not re.search(r"\d", line.split(": ", 1)[1]), line  # numbers are said, not written


def test_general_part_is_stdlib_docstrings(corpus):
    (name, rows), = corpus["general"].items()
    assert name == "python_stdlib_docstrings.jsonl" and len(rows) >= 100
    assert all(row["id"].startswith("stdlib-") and row["source"] == "Python standard library docstrings" for row in rows)
    assert all(len(row["text"]) >= 200 for row in rows)
    by_id = {row["id"]: row["text"] for row in rows}
    source = Path(sysconfig.get_paths()["stdlib"], "json", "__init__.py").read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(source)) in by_id["stdlib-json"]
    assert not any(".test." in i or i.startswith(("stdlib-test.", "stdlib-idlelib")) for i in by_id)
    words = " ".join(by_id.values()).split()
    assert sum(w in ("the", "of", "a", "to", "is") for w in words) / len(words) > 0.05  # English prose
