"""Training: each stage on 2 Ray Train workers over the curated demo folder (loss goes down, a
checkpoint is written, a resumed run continues), the ST-Prior margin, and a golden loss curve.

The stage runs come from the session fixture ``stage_runs`` (tests/model/conftest.py). The golden
file pins a fixed-seed, single-process short run; after an intended numerical change regenerate it
with ``JAVIS_UPDATE_GOLDEN=1 pytest tests/model/test_train.py -k golden`` and commit the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from model import checkpoint as ckpt
from model.javisdit import JavisDiT, freeze_for_stage
from model.presets import tiny
from model.st_prior import STPriorEstimator, VAEncoder
from model.train import FlowObjective, PriorObjective, TrainConfig, latents_folder, train, train_step
from tests.model.conftest import STAGE_STEPS

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "train_losses.json"
MARGIN_NOISE = 0.006  # the largest |margin| an untrained estimator showed on the held-back clip (8 seeds)
STAGES = ("video", "audio", "prior", "joint")


def _curve(run_dir: Path) -> list[float]:
    """The loss of every step, from the checkpoints' meta (each holds the steps since the last)."""
    return [loss for folder in ckpt.list_checkpoints(run_dir) for loss in ckpt.read_meta(folder)["losses"]]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_overfits_and_writes_a_checkpoint(stage_runs, stage):
    curve = _curve(stage_runs["dirs"][stage])
    assert len(curve) == STAGE_STEPS and all(map(lambda x: x == x, curve))  # no NaN
    k = 8
    first, last = sum(curve[:k]) / k, sum(curve[-k:]) / k
    print(f"{stage}: first {k} mean {first:.4f}, last {k} mean {last:.4f}")
    if stage == "joint":
        # the joint stage trains only the prior and Bi-CrossAttn layers: their effect on the loss is
        # smaller than the step-to-step noise of timesteps, tasks and noise, so it is measured on
        # the training clips with the same fixed noise before and after training
        first, last = _fixed_noise_loss(stage_runs, before=True), _fixed_noise_loss(stage_runs, before=False)
        print(f"joint: fixed-noise loss on the training clips before {first:.4f}, after {last:.4f}")
    assert last < first
    summary = stage_runs[stage]
    assert summary["stage"] == stage and summary["steps"] == STAGE_STEPS
    folder = ckpt.latest_checkpoint(stage_runs["dirs"][stage])
    assert Path(summary["checkpoint"]) == folder and ckpt.read_meta(folder)["step"] == STAGE_STEPS
    state = ckpt.load_state(folder)
    assert state["step"] == STAGE_STEPS and state["config"]["stage"] == stage and state["ema"]["shadow"]
    assert set(state["weights"]) == ({"estimator", "va_encoder"} if stage == "prior" else
                                     {"dit", "estimator"} if stage == "joint" else {"dit"})


def _fixed_noise_loss(stage_runs, before: bool, draws: int = 8) -> float:
    from model.data import iter_bucketed_batches, load_rows
    from model.presets import preset
    from model.train import build_objective

    config = TrainConfig(stage="joint", data=str(stage_runs["data"]), output="unused",
                         init_from=stage_runs["prior"]["checkpoint"])
    objective, _ = build_objective(config, preset("tiny"))
    if not before:
        objective.dit.load_state_dict(ckpt.load_weights(stage_runs["dirs"]["joint"])["dit"])
    objective.eval()
    rows = load_rows(latents_folder(stage_runs["data"]), "positives")
    total, count = 0.0, 0
    with torch.no_grad():
        for seed in range(draws):
            gen, mask_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            for batch in iter_bucketed_batches(rows, 2, drop_last=False):
                total, count = total + float(objective(batch, gen, mask_gen)["loss"]), count + 1
    return total / count


@pytest.mark.slow
def test_a_resumed_run_continues_the_step_count_and_the_data_position(stage_runs):
    first, second = stage_runs["video_first"], stage_runs["video"]
    assert (first["start_step"], first["steps"]) == (0, STAGE_STEPS // 2)
    assert second["start_step"] == STAGE_STEPS // 2 and second["steps"] == STAGE_STEPS
    assert (second["start_epoch"], second["start_batch_index"]) == (first["epoch"], first["batch_index"])
    assert len(second["losses"]) == STAGE_STEPS // 2  # only the remaining steps ran
    steps = [ckpt.read_meta(f)["step"] for f in ckpt.list_checkpoints(stage_runs["dirs"]["video"])]
    assert steps == [10, 20, 30, 40]
    optimizer = ckpt.load_state(stage_runs["dirs"]["video"])["optimizer"]
    assert {float(s["step"]) for s in optimizer["state"].values()} == {float(STAGE_STEPS)}  # AdamW resumed too
    with pytest.raises(ValueError, match="already has checkpoints"):
        train(TrainConfig(stage="video", data=str(stage_runs["data"]), output=str(stage_runs["dirs"]["video"])),
              resume=False)


def test_missing_latents_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="javis latents"):
        latents_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown stage"):
        TrainConfig(stage="pretrain", data="d", output="o")


def test_latents_of_another_spec_are_refused_and_old_manifests_still_match(tmp_path):
    """A manifest written before the JavisDiT++ spec fields existed still names its preset (the
    fields count as their defaults); JavisDiT++ latents are refused by the JavisDiT stages."""
    import dataclasses
    import json

    from model.latents import made_with_spec
    from model.spec import latent_spec
    from model.train import check_inputs

    def folder(name: str, spec: dict) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"spec": spec}))
        return tmp_path / name

    old = dataclasses.asdict(latent_spec("paper"))
    del old["video_vae"], old["text_encoder"]
    old_paper = folder("old", old)
    assert made_with_spec(old_paper) == "paper"
    with pytest.raises(ValueError, match="made for preset paper, --preset tiny given"):
        check_inputs(TrainConfig(stage="video", data=str(old_paper), output="o"), old_paper)
    ditpp = folder("ditpp", dataclasses.asdict(latent_spec("ditpp-tiny")))
    with pytest.raises(ValueError, match="made for JavisDiT\\+\\+ \\(ditpp-tiny\\): train them with the audio-pp"):
        check_inputs(TrainConfig(stage="video", data=str(ditpp), output="o"), ditpp)


@pytest.mark.slow
def test_stages_start_from_the_previous_checkpoint_and_train_only_their_parameters(stage_runs):
    video, audio, joint = (ckpt.load_weights(stage_runs["dirs"][s])["dit"] for s in ("video", "audio", "joint"))
    prior = ckpt.load_state(stage_runs["dirs"]["prior"])
    assert Path(prior["dit_from"]) == Path(stage_runs["audio"]["checkpoint"])  # linked, not copied
    for key in video:
        if key.startswith("video."):
            assert torch.equal(video[key], audio[key]), key  # the audio stage left the video branch alone
    copied = "audio.blocks.0.spatial.self_attn.qkv.weight"
    assert not torch.equal(audio[copied], video[copied.replace("audio.", "video.", 1)])  # copied, then trained
    for key in audio:
        trained = key.startswith("bi_attn.") or "prior" in key
        assert torch.equal(audio[key], joint[key]) != trained or "gate" in key, key


@pytest.mark.slow
def test_the_prior_margin_on_held_back_clips_improves(stage_runs):
    summary = stage_runs["prior"]
    before, after = summary["margin_before"], summary["margin_after"]
    print(f"ST-Prior margin on held-back clips {summary['holdout_clips']}: before {before:.6f}, after {after:.6f}")
    assert len(summary["holdout_clips"]) == 1
    # at initialisation the margin is noise (|margin| < MARGIN_NOISE over 8 seeds); the same short
    # run in-process (same data, lr and steps, 8 seeds) raised it by 0.04 to 0.30. A gain of 3x the
    # noise says the objective makes the estimator prefer the held-back clip's positives
    assert after - before > 3 * MARGIN_NOISE


# ---------------------------------------------------------------- golden (single process, no Ray)


def _batch(gen: torch.Generator, with_negatives: bool) -> dict:
    spec = tiny().dit.latents
    def randn(*shape):
        return torch.randn(*shape, generator=gen)
    batch = {"video": randn(2, 4, 4, 6, 8), "audio": randn(2, 8, 48, 16), "ids": ["a", "b"],
             "text": randn(2, spec.text_len, spec.text_dim), "text_mask": torch.arange(spec.text_len)[None].repeat(2, 1) < 5,
             "prior_text": randn(2, spec.prior_text_len, spec.prior_text_dim),
             "prior_text_mask": torch.arange(spec.prior_text_len)[None].repeat(2, 1) < 7}
    if with_negatives:
        batch.update(neg_video=torch.cat([randn(1, 4, 4, 6, 8), batch["video"][1:]]),
                     neg_audio=torch.cat([batch["audio"][:1], randn(1, 8, 48, 16)]))
    return batch


def _golden_curves(num_steps: int = 6) -> dict[str, list[float]]:
    torch.manual_seed(0)
    presets = tiny()
    dit, estimator, va = JavisDiT(presets.dit), STPriorEstimator(presets.prior), VAEncoder(presets.prior)
    freeze_for_stage(estimator, "joint")
    curves = {}
    for name, objective in (("joint", FlowObjective("joint", dit, estimator)), ("prior", None)):
        if objective is None:
            freeze_for_stage(estimator, "prior")
            freeze_for_stage(va, "prior")
            objective = PriorObjective(estimator, va)
        else:
            freeze_for_stage(dit, "joint")
        params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        gen, mask_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        batch = _batch(torch.Generator().manual_seed(3), name == "prior")
        curves[name] = [float(train_step(objective, optimizer, params, batch, gen, mask_gen, 1.0)["loss"])
                        for _ in range(num_steps)]
    return curves


def test_a_fixed_seed_short_run_matches_the_golden_losses():
    curves = _golden_curves()
    if os.environ.get("JAVIS_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(curves, indent=2) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == set(curves)
    for name, losses in curves.items():
        assert losses == pytest.approx(golden[name], rel=1e-4, abs=1e-5), name


def test_each_epoch_shuffle_is_a_seeded_permutation():
    from model.train import shuffled

    rows = list(range(100))
    once = list(shuffled(iter(rows), 16, seed=7))
    assert sorted(once) == rows and once != rows  # every row once, in another order
    assert list(shuffled(iter(rows), 16, seed=7)) == once  # a resumed run replays the same order
    assert list(shuffled(iter(rows), 16, seed=8)) != once
    assert list(shuffled(iter(rows), 0, seed=7)) == rows  # 0: data order
