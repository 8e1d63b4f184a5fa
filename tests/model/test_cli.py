"""The model commands of ``javis``: params (meta-device counts), train (its JSON line), sample."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from model.params import count_parameters
from pipeline.cli import main


def _json(args: list[str]) -> dict:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_params_dit_paper_is_instant_and_matches_count_parameters():
    out = _json(["params", "dit", "--preset", "paper"])
    assert out == count_parameters("dit", "paper")
    assert out["kind"] == "dit" and 3.0e9 < out["total"] < 3.6e9  # the published JavisDiT is 3.14 "B"
    assert set(out["trainable_by_stage"]) == {"video", "audio", "joint"}
    joint = _json(["params", "dit", "--preset", "paper", "--stage", "joint"])
    assert joint["trainable"] == out["trainable_by_stage"]["joint"] < out["total"]


def test_params_prior_paper_is_about_thirty_million():
    out = _json(["params", "prior", "--preset", "paper"])
    assert 29e6 <= out["trainable"] <= 31e6 and out["paper_units"] == "29.23 M"


def test_train_without_latents_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "audio", "--data", str(tmp_path), "--output", str(tmp_path / "run")])
    assert result.exit_code != 0 and "javis latents" in result.output


@pytest.mark.slow
def test_train_prints_losses_and_ends_with_a_json_line(stage_runs):
    out = stage_runs["audio"]  # the audio stage of the fixture ran through `javis train`
    assert set(out) >= {"stage", "steps", "first_loss", "last_loss", "checkpoint"}
    assert out["stage"] == "audio" and out["steps"] == 40 and out["last_loss"] < out["first_loss"]


@pytest.mark.slow
def test_sample_command_writes_the_file(stage_runs, tmp_path):
    target = tmp_path / "clip.mp4"
    out = _json(["sample", "--checkpoint", str(stage_runs["dirs"]["joint"]), "--prompt", "waves",
                 "--output", str(target), "--steps", "2", "--duration", "2", "--resolution", "64x48"])
    assert target.is_file() and (out["height"], out["width"], out["num_frames"]) == (64, 48, 16)
