"""``javis preference``: the modality-aware ranking on hand-built scores, the ledger's accounting,
and an end-to-end run (tiny random checkpoint, CPU rewards, local Ray) whose every candidate lands
in exactly one state and whose pairs obey the rule."""

from __future__ import annotations

import itertools
import json

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.preference_rank import (
    ALREADY_PAIRED,
    FORMED,
    GAP_BELOW_MARGIN,
    MAX_PAIRS,
    NO_ELIGIBLE,
    PARTNERS_TAKEN,
    TOO_FEW,
    RankingConfig,
    RewardSpec,
    rank_prompt,
    zscores,
)  # fmt: skip
from schemas.preference import (
    CANDIDATE_SCHEMA,
    DECISION_SCHEMA,
    PAIR_SCHEMA,
    CandCol,
    CandState,
    DecCol,
    PrefCol,
    PromptCol,
)  # fmt: skip

SPECS = [RewardSpec("aq", "audio", 0.1), RewardSpec("vq", "video", 0.1), RewardSpec("sy", "sync", 0.01)]
EQUAL = {"audio": 1.0, "video": 1.0, "semantic": 1.0, "sync": 1.0}
RULE = RankingConfig(better_margin=0.5, worse_margin=0.3, max_pairs_per_prompt=2)


def scores(**by_candidate):
    """candidate -> (aq, vq, sy) -> {"aq": ..., "vq": ..., "sy": ...}"""
    return {c: dict(zip(("aq", "vq", "sy"), v)) for c, v in by_candidate.items()}


def decision(ranking, a, b):
    [d] = [d for d in ranking.decisions if {d["winner_id"], d["loser_id"]} == {a, b}]
    return d


# ---------------------------------------------------------------- ranking units


def test_good_video_bad_audio_never_beats_fair_video_fair_audio():
    # g: great video, the best sync, terrible audio; video weighs double: the best overall score
    raw = scores(g=(1.0, 9.5, 0.9), f=(6.0, 5.0, 0.5), p=(5.5, 4.0, 0.4))
    ranking = rank_prompt(raw, SPECS, {**EQUAL, "video": 2.0}, RULE)
    assert max(ranking.overall, key=ranking.overall.get) == "g"
    for other in ("f", "p"):
        d = decision(ranking, "g", other)
        assert d["winner_id"] == "g" and d["overall_gap"] >= RULE.better_margin
        assert d["reason"] == "worse_in_audio" and d["min_modality_gap"] < -RULE.worse_margin
    assert all("g" not in pair for pair in ranking.pairs) and ranking.states["g"]["reason"] == NO_ELIGIBLE


def test_a_pair_forms_when_the_winner_is_better_overall_and_worse_nowhere():
    raw = scores(a=(7.0, 7.0, 0.5), b=(5.0, 5.0, 0.5))
    ranking = rank_prompt(raw, SPECS, EQUAL, RULE)
    assert ranking.pairs == [("a", "b")] and decision(ranking, "a", "b")["reason"] == FORMED
    assert ranking.states["a"] == {"state": "paired", "role": "winner", "pair_id": "a>b", "reason": None}
    assert ranking.states["b"]["role"] == "loser"
    # z-scores of two values are +-1; sync is a tie (std 0 -> floor): modality scores 1, 1, 0
    assert ranking.modality_scores["a"] == {"audio": 1.0, "video": 1.0, "sync": 0.0}
    assert ranking.overall["a"] == pytest.approx(2 / 3)


def test_ties_never_pair():
    ranking = rank_prompt(scores(a=(5.0, 5.0, 0.2), b=(5.0, 5.0, 0.2), c=(5.0, 5.0, 0.2)), SPECS, EQUAL, RULE)
    assert ranking.pairs == [] and {d["reason"] for d in ranking.decisions} == {GAP_BELOW_MARGIN}
    assert all(abs(v) < 1e-9 for c in ranking.overall for v in ranking.normalised[c].values())


def test_the_std_floor_keeps_differences_below_a_rewards_resolution_from_pairing():
    raw = scores(a=(5.02, 5.02, 0.2), b=(5.0, 5.0, 0.2))  # 0.02 apart, resolution 0.1
    ranking = rank_prompt(raw, SPECS, EQUAL, RULE)
    assert ranking.normalised["a"]["aq"] == pytest.approx(0.1) and ranking.pairs == []
    assert ranking.stats["aq"] == pytest.approx({"mean": 5.01, "std": 0.01, "std_used": 0.1})
    z, stats = zscores({"x": 1.0, "y": 3.0}, floor=0.1)
    assert z == {"x": -1.0, "y": 1.0} and stats["std_used"] == 1.0


def test_a_single_candidate_and_none_are_unpaired():
    ranking = rank_prompt(scores(a=(5.0, 5.0, 0.2)), SPECS, EQUAL, RULE)
    assert ranking.decisions == [] and ranking.states["a"]["reason"] == TOO_FEW and ranking.overall["a"] == 0.0
    empty = rank_prompt({}, SPECS, EQUAL, RULE)
    assert empty.states == {} and empty.pairs == []


def test_greedy_by_gap_each_candidate_once_and_at_most_max_pairs():
    raw = scores(a=(9.0, 9.0, 0.9), b=(7.0, 7.0, 0.7), c=(3.0, 3.0, 0.3), d=(1.0, 1.0, 0.1))
    ranking = rank_prompt(raw, SPECS, EQUAL, RULE)
    assert ranking.pairs == [("a", "d"), ("b", "c")]  # a-d is the largest gap; then b-c is what is left
    assert decision(ranking, "a", "c")["reason"] == ALREADY_PAIRED
    assert len(ranking.decisions) == 6  # every unordered pair of the four, once
    capped = rank_prompt(raw, SPECS, EQUAL, RankingConfig(max_pairs_per_prompt=1))
    assert capped.pairs == [("a", "d")] and decision(capped, "b", "c")["reason"] == MAX_PAIRS
    assert capped.states["b"]["reason"] == PARTNERS_TAKEN


def test_an_unscored_modality_takes_no_part():
    # sync terrible for a, but sync's weight is 0: it is neither in the overall score nor the rule
    raw = scores(a=(7.0, 7.0, 0.0), b=(5.0, 5.0, 0.9))
    ranking = rank_prompt(raw, SPECS, {**EQUAL, "sync": 0.0}, RULE)
    assert ranking.pairs == [("a", "b")] and set(ranking.modality_scores["a"]) == {"audio", "video"}
    assert "sy" not in ranking.normalised["a"] and ranking.overall["a"] == pytest.approx(1.0)
    # with sync counted, the same pair breaks the rule in sync
    assert decision(rank_prompt(raw, SPECS, EQUAL, RULE), "a", "b")["reason"] == "worse_in_sync"


def test_ranking_config_rejects_a_zero_margin():
    with pytest.raises(ValueError, match="better_margin"):
        RankingConfig(better_margin=0.0)


# ---------------------------------------------------------------- the ledger's accounting


def test_failed_candidates_are_recorded_with_their_stage_and_excluded_from_the_ranking(tmp_path):
    from pipeline.preference import PreferenceConfig
    from pipeline.preference_write import write_outputs

    config = PreferenceConfig(num_candidates=3)
    prompts = [{"prompt_id": "p", "prompt": "rain", "source": "prompt_file"}]
    items = [{CandCol.CANDIDATE_ID: f"p-{k}", CandCol.PROMPT_ID: "p", CandCol.PROMPT: "rain", CandCol.INDEX: k,
              CandCol.SEED: k} for k in range(3)]  # fmt: skip
    ok = {CandCol.MEDIA: "m.mp4", CandCol.BUCKET: "48x64x16", "latents_path": "l.npz", "generator": "{}",
          CandCol.ERROR_TYPE: None, CandCol.ERROR_MESSAGE: None}  # fmt: skip
    generated = [{CandCol.CANDIDATE_ID: "p-0", **ok}, {CandCol.CANDIDATE_ID: "p-1", **ok},
                 {CandCol.CANDIDATE_ID: "p-2", CandCol.ERROR_TYPE: "RuntimeError", CandCol.ERROR_MESSAGE: "oom"}]  # fmt: skip
    raw = json.dumps({"audio_signal_quality": 5.0, "image_quality": 5.0, "optical_flow_motion": 0.0, "av_align": 0.1})
    scored = [{CandCol.CANDIDATE_ID: "p-0", CandCol.RAW: raw, CandCol.DETAILS: "{}", "reward_versions": "{}",
               CandCol.ERROR_TYPE: None, CandCol.ERROR_MESSAGE: None},
              {CandCol.CANDIDATE_ID: "p-1", CandCol.RAW: None, CandCol.DETAILS: None, "reward_versions": "{}",
               CandCol.ERROR_TYPE: "ValueError", CandCol.ERROR_MESSAGE: "reward av_align: no audio"}]  # fmt: skip
    manifest = write_outputs(tmp_path, "ckpt", config, prompts, items, generated, scored, {})
    rows = {r[CandCol.CANDIDATE_ID]: r for r in pq.read_table(tmp_path / "candidates.parquet").to_pylist()}
    assert rows["p-2"][CandCol.FAILED_STAGE] == "generate" and rows["p-2"][CandCol.ERROR_MESSAGE] == "oom"
    assert rows["p-1"][CandCol.FAILED_STAGE] == "score" and rows["p-1"][CandCol.STATE] == CandState.FAILED
    assert rows["p-0"][CandCol.STATE] == CandState.UNPAIRED and rows["p-0"][CandCol.REASON] == TOO_FEW
    c = manifest["counts"]
    assert (c["candidates"], c["paired"], c["unpaired"], c["failed"]) == (3, 0, 1, 2)
    assert c["failed_by_stage"] == {"generate": 1, "score": 1} and (tmp_path / "manifest.json").is_file()


def test_a_candidate_whose_media_cannot_be_scored_fails_alone(tmp_path):
    from model.sample import write_mp4
    from pipeline.preference import ScoreCandidates
    from stages.rewards import RewardsConfig

    rng = np.random.default_rng(0)
    write_mp4(tmp_path / "good.mp4", rng.integers(0, 255, (16, 48, 64, 3), dtype=np.uint8), 8.0,
              0.1 * rng.standard_normal(32000).astype(np.float32), 16000)  # fmt: skip
    batch = pa.Table.from_pylist([{CandCol.CANDIDATE_ID: "good", CandCol.MEDIA: "good.mp4", CandCol.PROMPT: "x"},
                                  {CandCol.CANDIDATE_ID: "gone", CandCol.MEDIA: "gone.mp4", CandCol.PROMPT: "x"}])  # fmt: skip
    out = ScoreCandidates(str(tmp_path), RewardsConfig())(batch).to_pylist()
    assert out[0][CandCol.ERROR_TYPE] is None and set(json.loads(out[0][CandCol.RAW])) == set(RewardsConfig().backends)
    assert out[1][CandCol.ERROR_TYPE] and out[1][CandCol.RAW] is None


# ---------------------------------------------------------------- the generator


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A seeded, untrained tiny JavisDiT saved in the training stages' layout (no prior: sampled
    as the video and audio stages are)."""
    import torch

    from model import checkpoint as ckpt
    from model.javisdit import JavisDiT
    from model.presets import preset

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dit = JavisDiT(preset("tiny").dit)
    state = {"weights": {"dit": dit.state_dict()}, "ema": {"shadow": {}}, "config": {"stage": "audio", "preset": "tiny"},
             "step": 0, "epoch": 0, "batch_index": 0}  # fmt: skip
    folder = tmp_path_factory.mktemp("run") / ckpt.checkpoint_name(0)
    return ckpt.save_checkpoint(folder, state, {"stage": "audio", "preset": "tiny", "encoders": "tiny", "step": 0})


def test_a_candidate_does_not_depend_on_its_batch(tiny_checkpoint):
    from model.sample import Generator

    generator = Generator(tiny_checkpoint)
    both = generator.generate(["rain on a roof", "a dog barks"], [11, 12], steps=2)
    alone = generator.generate(["a dog barks"], [12], steps=2)[0]
    torch = pytest.importorskip("torch")
    assert torch.allclose(both[1]["video_latent"], alone["video_latent"], atol=1e-5)
    assert both[1]["text_states"].shape[0] < both[1]["text_len"] == 16  # trimmed to the prompt's tokens
    assert both[0]["frames"].shape == (16, 48, 64, 3) and both[0]["audio"].shape == (32000,)
    assert not torch.allclose(both[0]["video_latent"], both[1]["video_latent"])


def test_a_javisdit_plus_plus_checkpoint_generates(tmp_path):
    ditpp = pytest.importorskip("model.ditpp", reason="model/ditpp.py (JavisDiT++) is not written yet")
    import torch

    from model import checkpoint as ckpt
    from model.ditpp import ditpp_preset
    from model.sample import Generator

    config = ditpp_preset("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ditpp.JavisDiTPP(config)
    stage = "sft"
    state = {"weights": {"dit": model.state_dict()}, "ema": {"shadow": {}}, "config": {"stage": stage, "preset": "tiny"}}
    folder = ckpt.save_checkpoint(tmp_path / "ck", state, {"stage": stage, "preset": "tiny", "encoders": "tiny",
                                                           "model": "ditpp", "step": 0})  # fmt: skip
    generator = Generator(folder)
    [c] = generator.generate(["rain"], [0], steps=1)
    assert generator.model_kind == "javisdit++" and generator.describe()["latent_spec"] == "ditpp-tiny"
    assert not c["prior"] and c["frames"].dtype == np.uint8 and c["frames"].shape[0] == 17  # its shortest bucket
    assert c["video_latent"].shape[0] == config.latents.video_channels


# ---------------------------------------------------------------- end to end


DEMO_CAPTIONS = ["a red square slides across a grey background while a tone plays",
                 "a bouncing ball with a click on every bounce", "colour bars with a steady beep"]  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A curated run's shape (manifest + accepted-clip shards) with the demo's captions: two clips
    share a caption (one prompt), one has only a title, one has neither (no prompt)."""
    from schemas import CLIP_SCHEMA, Col, conform

    out = tmp_path_factory.mktemp("demo_out")
    rows = [{Col.ID: "c1", Col.SOURCE_ID: "s1", Col.CAPTION_MERGE_TEXT: DEMO_CAPTIONS[0]},
            {Col.ID: "c2", Col.SOURCE_ID: "s1", Col.CAPTION_MERGE_TEXT: DEMO_CAPTIONS[0]},
            {Col.ID: "c3", Col.SOURCE_ID: "s2", Col.CAPTION_MERGE_TEXT: DEMO_CAPTIONS[1]},
            {Col.ID: "c4", Col.SOURCE_ID: "s3", Col.SRC_TITLE: DEMO_CAPTIONS[2]},
            {Col.ID: "c5", Col.SOURCE_ID: "s4"}]  # fmt: skip
    (out / "shards").mkdir()
    pq.write_table(conform(rows, CLIP_SCHEMA), out / "shards" / "shard-00000.parquet")
    (out / "manifest.json").write_text("{}")
    return out


def _invoke(*args):
    from pipeline.cli import main

    return CliRunner().invoke(main, ["preference", *map(str, args)])


@pytest.fixture(scope="module")
def preference_run(ray_local, tiny_checkpoint, demo_run, tmp_path_factory):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    pref = tmp_path_factory.mktemp("pref") / "pref"
    # an untrained model's candidates differ little: a low floor and margins let pairs form
    result = _invoke("--checkpoint", tiny_checkpoint.parent, "--data", demo_run, "--output", pref, "--candidates", 4,
                     "--steps", 2, "--seed", 3, "--set", "batch_size=4", "--set", "ranking.std_floor_scale=0.01",
                     "--set", "ranking.better_margin=0.2", "--set", "ranking.worse_margin=0.5")  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    return pref, result.output


def test_every_candidate_lands_in_exactly_one_state(preference_run):
    pref, output = preference_run
    manifest = json.loads((pref / "manifest.json").read_text())
    candidates = pq.read_table(pref / "candidates.parquet")
    assert candidates.schema.equals(CANDIDATE_SCHEMA, check_metadata=False)
    rows = candidates.to_pylist()
    assert len(rows) == 3 * 4 == len({r[CandCol.CANDIDATE_ID] for r in rows})  # 3 distinct prompts x K
    c = manifest["counts"]
    assert c["candidates"] == c["paired"] + c["unpaired"] + c["failed"] == 12 and c["pairs"] * 2 == c["paired"] > 0
    for r in rows:
        assert r[CandCol.STATE] in (CandState.PAIRED, CandState.UNPAIRED, CandState.FAILED)
        assert (r[CandCol.PAIR_ID] is not None) == (r[CandCol.STATE] == CandState.PAIRED)
        assert (r[CandCol.REASON] is not None) == (r[CandCol.STATE] == CandState.UNPAIRED)
        assert (r[CandCol.FAILED_STAGE] is not None) == (r[CandCol.STATE] == CandState.FAILED)
    prompts = pq.read_table(pref / "prompts.parquet").to_pylist()
    assert sorted(p[PromptCol.PROMPT] for p in prompts) == sorted(DEMO_CAPTIONS)
    assert {p[PromptCol.SOURCE] for p in prompts} == {"caption_merge_text", "src_title"}
    assert manifest["rewards"]["unscored_modalities"].keys() == {"semantic"}
    assert (manifest["preset"], manifest["latent_spec"], manifest["model"]) == ("tiny", "tiny", "javisdit")
    assert [b["name"] for b in manifest["rewards"]["backends"]] == ["audio_signal_quality", "image_quality",
                                                                     "optical_flow_motion", "av_align"]  # fmt: skip
    assert all(b["version"] for b in manifest["rewards"]["backends"]) and '"paired"' in output


def test_pairs_obey_the_modality_aware_rule_recomputed_from_the_ledger(preference_run):
    pref, _ = preference_run
    manifest = json.loads((pref / "manifest.json").read_text())
    better, worse = manifest["ranking"]["better_margin"], manifest["ranking"]["worse_margin"]
    rows = {r[CandCol.CANDIDATE_ID]: r for r in pq.read_table(pref / "candidates.parquet").to_pylist()}
    modalities = manifest["rewards"]["scored_modalities"]
    pairs = pq.read_table(pref / "pairs").to_pylist()
    assert pairs
    for p in pairs:
        w, lo = rows[p[PrefCol.WINNER_ID]], rows[p[PrefCol.LOSER_ID]]
        assert w[CandCol.OVERALL] - lo[CandCol.OVERALL] >= better
        assert all(w[f"score_{m}"] - lo[f"score_{m}"] >= -worse for m in modalities)
        assert p[PrefCol.OVERALL_GAP] == pytest.approx(w[CandCol.OVERALL] - lo[CandCol.OVERALL])
        assert w[CandCol.ROLE] == "winner" and lo[CandCol.ROLE] == "loser" and w[CandCol.PAIR_ID] == p[PrefCol.PAIR_ID]
    decisions = pq.read_table(pref / "decisions.parquet")
    assert decisions.schema.equals(DECISION_SCHEMA, check_metadata=False)
    formed = [d for d in decisions.to_pylist() if d[DecCol.FORMED]]
    assert sorted(d[DecCol.PAIR_ID] for d in formed) == sorted(p[PrefCol.PAIR_ID] for p in pairs)
    by_prompt = {}
    for r in rows.values():
        by_prompt.setdefault(r[CandCol.PROMPT_ID], []).append(r[CandCol.CANDIDATE_ID])
    assert decisions.num_rows == sum(len(list(itertools.combinations(c, 2))) for c in by_prompt.values())
    # the normalisation in prompts.parquet reproduces the stored z-scores
    for p in pq.read_table(pref / "prompts.parquet").to_pylist():
        stats = json.loads(p[PromptCol.NORMALISATION])
        for cid in by_prompt[p[PromptCol.PROMPT_ID]]:
            raw, z = json.loads(rows[cid][CandCol.RAW]), json.loads(rows[cid][CandCol.NORMALISED])
            for name, s in stats.items():
                assert z[name] == pytest.approx((raw[name] - s["mean"]) / s["std_used"])


def test_pair_shards_hold_both_candidates_latents_text_and_decodable_media(preference_run):
    from schemas.latents import unpack_tensor

    pref, _ = preference_run
    [shard] = sorted((pref / "pairs").glob("shard-*.parquet"))
    table = pq.read_table(shard)
    assert table.schema.names == PAIR_SCHEMA.names
    row = table.to_pylist()[0]
    assert unpack_tensor(row, PrefCol.WINNER_VIDEO).shape == (4, 4, 6, 8)  # tiny: 16 frames of 48x64
    assert unpack_tensor(row, PrefCol.LOSER_AUDIO).shape == unpack_tensor(row, PrefCol.WINNER_AUDIO).shape
    assert unpack_tensor(row, PrefCol.TEXT).shape[1] == 32 and row[PrefCol.TEXT_LEN] == 16
    assert row[PrefCol.BUCKET] == "48x64x16" and set(json.loads(row[PrefCol.SCORES])) == {"winner", "loser"}
    for rel in (row[PrefCol.WINNER_MEDIA], row[PrefCol.LOSER_MEDIA]):
        with av.open(str(pref / rel)) as container:
            codecs = {s.codec_context.name for s in container.streams}
            assert codecs == {"h264", "aac"} and sum(1 for _ in container.decode(video=0)) == 16


def test_user_mistakes_are_one_line_and_a_rerun_is_refused(preference_run, tiny_checkpoint, tmp_path):
    pref, _ = preference_run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rain\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cases = [
        (("--checkpoint", tiny_checkpoint, "--prompts", prompts, "--output", pref), "not empty"),
        (("--checkpoint", tiny_checkpoint, "--prompts", prompts, "--output", tmp_path / "a", "--candidates", 1), ">= 2"),
        (("--checkpoint", tiny_checkpoint, "--prompts", empty, "--output", tmp_path / "b"), "no prompts"),
        (("--checkpoint", tiny_checkpoint, "--output", tmp_path / "c"), "--data OUT"),
        (("--checkpoint", tmp_path, "--prompts", prompts, "--output", tmp_path / "d"), "neither a checkpoint"),
        (("--checkpoint", tiny_checkpoint, "--prompts", prompts, "--output", tmp_path / "e",
          "--set", "rewards.audiobox_weights=/nope.pt", "--set", "rewards.audio=[audiobox_aesthetics]"), "never downloaded"),
    ]  # fmt: skip
    for args, message in cases:
        result = _invoke(*args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1
