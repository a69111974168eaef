import sys

import pytest

from flightmind.cli import main
from flightmind.dashboard import PANELS, read_scalars
from flightmind.errors import FlightMindError


@pytest.mark.slow
def test_dashboard_draws_the_four_panels_of_a_real_smoke_run(smoke_run, tmp_path, capsys):
    from matplotlib.image import imread

    cwd, _ = smoke_run
    run_dir = cwd / "lightning_logs" / "version_0"
    scalars = read_scalars(run_dir)
    for _, _, series, _ in PANELS:  # every panel has data
        assert any(scalars.get(tag) for tag, _ in series)
    out = tmp_path / "dashboard.png"
    assert main(["dashboard", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    image = imread(out)
    assert image.shape[:2] == (800, 1200)
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # not blank
    assert (rgb.min(axis=-1) < 0.5).mean() > 0.01  # dark pixels: lines, text


@pytest.mark.slow
def test_dashboard_title_names_model_size_and_steps(smoke_run):
    from flightmind.dashboard import title

    cwd, _ = smoke_run
    run_dir = cwd / "lightning_logs" / "version_0"
    # d4 with the demo tokenizer's 9,088 rows: 12.59M - (32,768 - 9,088) × 256 = 6.52M parameters.
    assert title(run_dir, read_scalars(run_dir), None) == "FlightMind-d4 (6.5M parameters) · lightning_logs/version_0 · 20 steps"


def test_without_matplotlib_the_dashboard_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "pip install 'flightmind[plot]'" in capsys.readouterr().err


def test_a_directory_without_event_files_is_one_clear_error(tmp_path):
    from flightmind.dashboard import draw

    with pytest.raises(FlightMindError, match="no TensorBoard event files"):
        draw(tmp_path, tmp_path / "x.png")
