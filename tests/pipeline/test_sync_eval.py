"""javis sync-eval: the AUROC and paired-accuracy maths, and a run over the demo's negatives."""

from __future__ import annotations

import json

import pytest

from pipeline.sync_eval import auroc, paired_accuracy, summarize


def test_auroc_of_separated_inverse_and_tied_scores():
    assert auroc([0.9, 0.8], [0.1, 0.2, 0.3]) == 1.0
    assert auroc([0.1, 0.2], [0.8, 0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5  # every pair tied: half each
    # pairs (p, n): (3,1) win, (3,3) tie, (2,1) win, (2,3) loss -> (1 + 0.5 + 1 + 0) / 4
    assert auroc([3.0, 2.0], [1.0, 3.0]) == pytest.approx(0.625)
    assert auroc([], [1.0]) is None and auroc([1.0], []) is None


def test_auroc_matches_counting_every_pair():
    rng = __import__("numpy").random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).tolist(), rng.integers(0, 5, 20).tolist()  # many ties
    counted = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert auroc(pos, neg) == pytest.approx(counted)


def test_paired_accuracy_counts_ties_as_misses():
    assert paired_accuracy([(2.0, 1.0), (1.0, 1.0), (0.0, 1.0), (5.0, -1.0)]) == 0.5
    assert paired_accuracy([]) is None


def test_summary_per_family_pairs_each_negative_with_its_own_positive():
    positives = {"a": 0.9, "b": 0.4, "c": 0.7}  # c has no negative: not in the evaluation
    # z has no positive: left out
    negatives = [("a", "audio_temporal", 0.5), ("b", "audio_temporal", 0.6), ("a", "video_spatial", 0.1),
                 ("z", "video_spatial", 0.0)]  # fmt: skip
    summary = summarize(positives, negatives)
    assert summary["pairs"] == 3 and summary["accuracy"] == pytest.approx(2 / 3)
    # positives a, b against negatives 0.5, 0.6, 0.1: a beats 3, b beats 1 -> 4 / 6
    assert summary["auroc"] == pytest.approx(4 / 6)
    temporal = summary["families"]["audio_temporal"]
    assert temporal == {"auroc": 0.5, "accuracy": 0.5, "pairs": 2}
    assert summary["families"]["video_spatial"] == {"auroc": 1.0, "accuracy": 1.0, "pairs": 1}
    json.dumps(summary)  # plain types only


@pytest.fixture(scope="module")
def augmented(samples, ray_local, tmp_path_factory):
    from augment.build import AugmentConfig
    from pipeline.augment_runner import run_augment
    from pipeline.config import RayConfig, load_config
    from pipeline.runner import run

    out = tmp_path_factory.mktemp("sync_eval")
    run([str(samples)], out, load_config("demo-spine", overrides=["ray.progress_bars=false"]), show_progress=False)
    run_augment(out, AugmentConfig(), RayConfig())
    return out


def _cli(*args: str):
    from click.testing import CliRunner

    from pipeline.cli import main

    return CliRunner().invoke(main, ["sync-eval", *args])


@pytest.mark.slow
def test_sync_eval_pairs_every_clip_with_one_negative_per_family(augmented):
    import pyarrow.parquet as pq

    from pipeline.outputs import read_shards

    media = sorted((augmented / "negatives" / "media").rglob("*.mp4"))[:2]
    result = _cli(str(augmented), "--backend", "av_align", "--json", "--samples", str(media[0]), "--samples",
                  str(media[1]))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"backends", "samples"}
    summary = report["backends"]["av_align"]
    assert set(summary) == {"auroc", "accuracy", "pairs", "families"}
    negatives = pq.read_table(augmented / "negatives" / "shard-00000.parquet").to_pylist()
    expected = {}
    for row in negatives:
        expected.setdefault(row["family"], set()).add(row["clip_id"])
    assert {f: m["pairs"] for f, m in summary["families"].items()} == {f: len(c) for f, c in expected.items()}
    assert summary["pairs"] == sum(len(c) for c in expected.values())
    assert all(c <= {r["id"] for r in read_shards(augmented).to_pylist()} for c in expected.values())
    for metrics in [summary, *summary["families"].values()]:
        assert 0 <= metrics["auroc"] <= 1 and 0 <= metrics["accuracy"] <= 1
    assert set(report["samples"]) == {str(m) for m in media}
    assert all(isinstance(s["av_align"], float) for s in report["samples"].values())
    table = _cli(str(augmented))
    assert table.exit_code == 0 and "audio_temporal" in table.output and "(paper, Tab. A4)" in table.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "nope"], "unknown sync backend 'nope'"),
        (["--backend", "javisscore"], "imagebind_weights must be set"),
    ],
)
def test_sync_eval_user_errors_are_one_line(augmented, args, message):
    result = _cli(str(augmented), *args)
    assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1


def test_sync_eval_says_to_augment_first(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    result = _cli(str(tmp_path))
    assert result.exit_code == 1 and f"run `javis augment {tmp_path}` first" in result.output
    (tmp_path / "empty").mkdir()
    result = _cli(str(tmp_path / "empty"))
    assert result.exit_code == 1 and "no curated run" in result.output
