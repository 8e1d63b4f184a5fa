"""Precomputed latents over a real curated output folder (sample media -> javis run -> javis
augment -> precompute_latents), on local Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.encoders import build_encoders
from model.latents import (
    FAILURES,
    LATENTS_DIR,
    TINY_BUCKETS,
    Buckets,
    cover_crop,
    latent_shards,
    precompute_latents,
    read_negatives,
    work_items,
)
from model.spec import PAPER, TINY
from pipeline.outputs import read_shards
from schemas.latents import LATENTS_SCHEMA, LatCol, LatentKind, unpack_tensor


def _rows(latents_dir: Path) -> list[dict]:
    return pq.read_table(latent_shards(latents_dir)).to_pylist()


@pytest.mark.slow
def test_every_clip_and_negative_has_latents_with_the_spec_shapes(curated):
    out, summaries = curated
    clips = read_shards(out).to_pylist()
    negatives = read_negatives(out).to_pylist()
    rows = {r[LatCol.ID]: r for r in _rows(out / LATENTS_DIR)}
    first = summaries["first"]
    assert first["inputs"] == len(clips) + len(negatives) == first["encoded"] + first["failed"]
    assert first["positives"] == len(clips) and first["negatives"] == len(negatives)
    assert set(rows) == {c["id"] for c in clips} | {n["negative_id"] for n in negatives}
    assert pq.read_table(out / LATENTS_DIR / FAILURES).num_rows == 0
    encoders = build_encoders("tiny", TINY)
    for clip in clips:
        row = rows[clip["id"]]
        h, w, t = row[LatCol.BUCKET_HEIGHT], row[LatCol.BUCKET_WIDTH], row[LatCol.BUCKET_FRAMES]
        assert (h > w) == (clip["cut_height"] > clip["cut_width"])  # the rotated clip lands in a portrait bucket
        assert t <= clip["cut_video_duration_s"] * TINY.video_fps + 1e-3
        assert unpack_tensor(row, LatCol.VIDEO).shape == encoders.video.latent_shape(t, h, w)
        assert unpack_tensor(row, LatCol.AUDIO).shape == encoders.audio.latent_shape(row[LatCol.NUM_SAMPLES])
        assert row[LatCol.CAPTION] == "" and row[LatCol.CAPTION_SOURCE] == "empty"  # no titles, no annotation
        text = unpack_tensor(row, LatCol.TEXT)
        assert text.shape == (1, TINY.text_dim) and row[LatCol.TEXT_LEN] == TINY.text_len  # the end token only
        assert unpack_tensor(row, LatCol.PRIOR_TEXT).shape == (1, TINY.prior_text_dim)
    assert len({rows[c["id"]][LatCol.BUCKET] for c in clips}) >= 2  # the clips span several buckets
    for neg in negatives:
        row = rows[neg["negative_id"]]
        positive = rows[neg["clip_id"]]
        assert row[LatCol.KIND] == LatentKind.NEGATIVE and row[LatCol.CLIP_ID] == neg["clip_id"]
        assert row[LatCol.FAMILY] == neg["family"] and row[LatCol.OPERATION] == neg["operation"]
        assert row[LatCol.SWAPPED] == neg["family"].split("_")[0]
        assert row[LatCol.BUCKET] == positive[LatCol.BUCKET] and row[LatCol.TEXT] is None
        swapped = LatCol.VIDEO if row[LatCol.SWAPPED] == "video" else LatCol.AUDIO
        assert not np.array_equal(unpack_tensor(row, swapped), unpack_tensor(positive, swapped))
    assert pq.read_schema(latent_shards(out / LATENTS_DIR)[0]).metadata == LATENTS_SCHEMA.metadata


@pytest.mark.slow
def test_a_bad_clip_is_recorded_then_retried_and_done_ids_are_skipped(curated):
    out, summaries = curated
    first, retry, again = summaries["first"], summaries["retry"], summaries["again"]
    assert first["failed_ids"] == [summaries["victim"]] and first["encoded"] == first["inputs"] - 1
    failure = summaries["first_failures"][0]
    assert failure[LatCol.ID] == summaries["victim"] and failure[LatCol.KIND] == LatentKind.POSITIVE
    assert failure[LatCol.ERROR_TYPE] and failure[LatCol.ERROR_MESSAGE]
    assert (retry["encoded"], retry["skipped_done"], retry["failed"]) == (1, first["inputs"] - 1, 0)
    assert (again["encoded"], again["skipped_done"], again["failed"]) == (0, first["inputs"], 0)
    assert pq.read_table(out / LATENTS_DIR / FAILURES).num_rows == 0
    ids = [r[LatCol.ID] for r in _rows(out / LATENTS_DIR)]
    assert len(ids) == len(set(ids)) == first["inputs"]  # no row written twice


@pytest.mark.slow
def test_settings_caption_column_and_too_short_clips(curated):
    out, _ = curated
    with pytest.raises(ValueError, match="other settings"):
        precompute_latents(out, spec=PAPER)
    with pytest.raises(ValueError, match="caption column 'caption'"):
        work_items(out, TINY, TINY_BUCKETS, "caption", include_negatives=True)
    long_only = Buckets(resolutions=((48, 64),), num_frames=(32,))  # 4 s: the 3 s clips do not fit
    items, failed = work_items(out, TINY, long_only, None, include_negatives=True)
    clips = read_shards(out).to_pylist()
    short = {c["id"] for c in clips if c["cut_video_duration_s"] < 4}
    assert short and {f[LatCol.ID] for f in failed if f[LatCol.ERROR_TYPE] == "too_short"} == short
    no_positive = {f[LatCol.CLIP_ID] for f in failed if f[LatCol.ERROR_TYPE] == "no_positive"}
    assert no_positive == short  # their negatives are accounted too
    assert len(items) + len(failed) == len(clips) + read_negatives(out).num_rows


def test_buckets_pick_the_nearest_aspect_and_the_longest_fitting_duration():
    buckets = Buckets(resolutions=((48, 64), (64, 48), (64, 64)), num_frames=(24, 16))
    assert buckets.pick(320, 240, 3.96, 8.0) == (48, 64, 24)
    assert buckets.pick(240, 320, 2.5, 8.0) == (64, 48, 16)
    assert buckets.pick(500, 480, 10.0, 8.0) == (64, 64, 24)
    assert buckets.pick(320, 240, 1.9, 8.0) is None
    with pytest.raises(ValueError, match="space stride"):
        Buckets(resolutions=((50, 64),), num_frames=(8,)).check(TINY)


def test_cover_crop_scales_to_cover_and_keeps_the_centre():
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    frames[:, 100:140, 140:180] = 255  # a white square in the middle
    out = cover_crop(frames, 64, 64)
    assert out.shape == (2, 64, 64, 3)
    assert out[:, 32, 32].min() == 255 and out[:, 2, 2].max() == 0


def test_caption_falls_back_from_the_named_column_to_the_title_to_empty():
    from model.latents import _caption

    assert _caption({"caption_merge_text": "a dog barks", "src_title": "Dog"}, None) == ("a dog barks", "caption_merge_text")
    assert _caption({"caption_merge_text": None, "src_title": "Dog"}, None) == ("Dog", "src_title")
    assert _caption({"my_caption": "rain", "src_title": "Dog"}, "my_caption") == ("rain", "my_caption")
    assert _caption({"src_title": None}, None) == ("", "empty")


# ---- JavisDiT++ latents ---------------------------------------------------------------------------


def test_ditpp_folder_names_buckets_and_old_manifest_identity():
    from model.latents import DITPP_PAPER_BUCKETS, DITPP_TINY_BUCKETS, default_buckets, latents_dir_name
    from model.spec import DITPP_PAPER, DITPP_TINY

    assert latents_dir_name("tiny") == latents_dir_name("paper") == LATENTS_DIR
    assert latents_dir_name("ditpp-tiny") == "latents-ditpp-tiny" and latents_dir_name("ditpp-paper") == "latents-ditpp-paper"
    with pytest.raises(ValueError, match="unknown preset"):
        latents_dir_name("large")
    assert default_buckets(DITPP_TINY) is DITPP_TINY_BUCKETS and default_buckets(DITPP_PAPER) is DITPP_PAPER_BUCKETS
    assert default_buckets(TINY) is TINY_BUCKETS
    for spec, buckets in ((DITPP_TINY, DITPP_TINY_BUCKETS), (DITPP_PAPER, DITPP_PAPER_BUCKETS)):
        buckets.check(spec)
        assert all((t - 1) % 4 == 0 for t in buckets.num_frames)
        assert all(h % 16 == 0 and w % 16 == 0 for h, w in buckets.resolutions)
    with pytest.raises(ValueError, match="4k \\+ 1"):
        TINY_BUCKETS.check(DITPP_TINY)



@pytest.mark.slow
def test_ditpp_tiny_latents_through_the_cli_load_and_collate(curated):
    import json

    from click.testing import CliRunner

    from model.data import collate, load_rows
    from model.encoders import num_mel_frames
    from model.spec import DITPP_TINY
    from pipeline.cli import main

    out, summaries = curated
    old = sorted(p.name for p in latent_shards(out / LATENTS_DIR))
    result = CliRunner().invoke(main, ["latents", str(out), "--preset", "ditpp-tiny", "--batch-size", "8"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads(result.output.strip().splitlines()[-1])
    folder = out / "latents-ditpp-tiny"
    assert summary["output_dir"] == str(folder) and summary["failed"] == summaries["again"]["failed"]
    # the training tests' fixture may have made these latents in the shared folder first
    assert summary["encoded"] + summary["skipped_done"] == summary["inputs"] - summary["failed"]
    assert sorted(p.name for p in latent_shards(out / LATENTS_DIR)) == old  # JavisDiT's latents untouched
    rows = load_rows(folder)
    by_bucket: dict[str, list] = {}
    for row in rows:
        by_bucket.setdefault(row[LatCol.BUCKET], []).append(row)
        assert row[LatCol.BUCKET_FRAMES] in (17, 25) and row[LatCol.PRIOR_TEXT] is None
    for bucket_rows in by_bucket.values():
        batch = collate(bucket_rows)
        h, w, t = (int(n) for n in batch["bucket"].split("x"))
        n = len(bucket_rows)
        assert tuple(batch["video"].shape) == (n, 16, 1 + (t - 1) // 4, h // 8, w // 8)
        samples = round(t / DITPP_TINY.video_fps * 16_000)
        assert tuple(batch["audio"].shape) == (n, 8, num_mel_frames(samples, DITPP_TINY) // 4, 16)
        assert tuple(batch["text"].shape) == (n, 16, 32) and batch["text_mask"].any(1).all()
        assert "prior_text" not in batch
    negatives = load_rows(folder, "negatives")
    assert negatives and len(load_rows(folder, "pairs")) == len(negatives)


def test_a_manifest_from_before_the_ditpp_fields_still_matches(tmp_path):
    """Latents made before ``video_vae``/``text_encoder`` existed resume instead of being refused."""
    import dataclasses
    import json

    from model.latents import MANIFEST, _check_manifest, with_spec_defaults

    old_spec = {k: v for k, v in dataclasses.asdict(TINY).items() if k not in ("video_vae", "text_encoder")}
    identity = {"encoders": "tiny", "spec": dataclasses.asdict(TINY), "buckets": TINY_BUCKETS.to_json(),
                "storage_dtype": "float32"}  # fmt: skip
    (tmp_path / MANIFEST).write_text(json.dumps({**identity, "spec": old_spec}))
    _check_manifest(tmp_path, identity)  # no error
    assert with_spec_defaults(old_spec) == dataclasses.asdict(TINY)
    with pytest.raises(ValueError, match="other settings"):
        _check_manifest(tmp_path, {**identity, "spec": dataclasses.asdict(PAPER)})
