"""Latent rows to batches: collate shapes, one shape per bucketed batch, pairs, Ray Datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import collate, iter_bucketed_batches, latent_dataset, load_rows, pair_rows, rows_from_batches
from model.spec import TINY
from schemas.latents import LatCol, LatentKind, pack_tensor, unpack_tensor


def _row(row_id: str, bucket: str, kind: str = LatentKind.POSITIVE, clip_id: str | None = None, seed: int = 0,
         tokens: int = 3, swapped: str | None = None) -> dict:  # fmt: skip
    """A synthetic latent row with TINY sizes (the bucket string only has to be consistent)."""
    rng = np.random.default_rng(seed)
    row = {LatCol.ID: row_id, LatCol.CLIP_ID: clip_id or row_id, LatCol.KIND: kind, LatCol.BUCKET: bucket,
           LatCol.SWAPPED: swapped, LatCol.FAMILY: f"{swapped}_temporal" if swapped else None, LatCol.OPERATION: None,
           **pack_tensor(LatCol.VIDEO, rng.normal(size=(4, 2, 6, 8)).astype(np.float32)),
           **pack_tensor(LatCol.AUDIO, rng.normal(size=(8, 12, 16)).astype(np.float32))}  # fmt: skip
    if kind == LatentKind.POSITIVE:
        row.update(pack_tensor(LatCol.TEXT, rng.normal(size=(tokens, TINY.text_dim)).astype(np.float32)))
        row.update(pack_tensor(LatCol.PRIOR_TEXT, rng.normal(size=(tokens + 1, TINY.prior_text_dim)).astype(np.float16)))
        row.update({LatCol.TEXT_LEN: TINY.text_len, LatCol.PRIOR_TEXT_LEN: TINY.prior_text_len})
    else:
        row.update({LatCol.TEXT: None, LatCol.PRIOR_TEXT: None})
    return row


def test_collate_pads_text_and_stacks_latents():
    rows = [_row("a", "b1", tokens=2), _row("b", "b1", seed=1, tokens=5)]
    batch = collate(rows)
    assert batch["video"].shape == (2, 4, 2, 6, 8) and batch["audio"].shape == (2, 8, 12, 16)
    assert batch["text"].shape == (2, TINY.text_len, TINY.text_dim) and batch["text_mask"].sum(1).tolist() == [2, 5]
    assert batch["prior_text"].shape == (2, 77, TINY.prior_text_dim) and batch["prior_text_mask"].sum(1).tolist() == [3, 6]
    assert batch["prior_text"].dtype == torch.float32  # stored as float16, served as float32
    torch.testing.assert_close(batch["text"][1, :5], torch.from_numpy(unpack_tensor(rows[1], LatCol.TEXT).copy()))
    assert torch.all(batch["text"][0, 2:] == 0) and batch["ids"] == ["a", "b"] and batch["bucket"] == "b1"
    with pytest.raises(ValueError, match="several buckets"):
        collate([_row("a", "b1"), _row("b", "b2")])
    with pytest.raises(ValueError, match="mixed positives and negatives"):
        collate([_row("a", "b1"), _row("n", "b1", kind=LatentKind.NEGATIVE, clip_id="a", swapped="video")])


def test_bucketed_batches_have_one_bucket_each():
    rows = [_row(f"r{i}", "b1" if i % 3 else "b2", seed=i) for i in range(11)]  # 7 of b1, 4 of b2
    full = list(iter_bucketed_batches(rows, batch_size=3, drop_last=True))
    assert [len(b["ids"]) for b in full] == [3, 3, 3]
    for batch in full:
        assert len({rows[int(i[1:])][LatCol.BUCKET] for i in batch["ids"]}) == 1
    every = list(iter_bucketed_batches(rows, batch_size=3, drop_last=False))
    assert sorted(i for b in every for i in b["ids"]) == sorted(r[LatCol.ID] for r in rows)
    assert sorted(len(b["ids"]) for b in every) == [1, 1, 3, 3, 3]


def test_pairs_swap_only_the_negatives_modality():
    pos = _row("c1", "b1")
    video_neg = _row("n1", "b1", LatentKind.NEGATIVE, "c1", seed=5, swapped="video")
    audio_neg = _row("n2", "b1", LatentKind.NEGATIVE, "c1", seed=6, swapped="audio")
    orphan = _row("n3", "b1", LatentKind.NEGATIVE, "c9", seed=7, swapped="audio")
    batch = collate(pair_rows([orphan, audio_neg, pos, video_neg]))
    assert batch["neg_ids"] == ["n1", "n2"] and batch["neg_swaps_video"].tolist() == [True, False]
    torch.testing.assert_close(batch["neg_video"][0], torch.from_numpy(unpack_tensor(video_neg, LatCol.VIDEO).copy()))
    torch.testing.assert_close(batch["neg_audio"][0], batch["audio"][0])  # the original audio
    torch.testing.assert_close(batch["neg_video"][1], batch["video"][1])  # the original video
    torch.testing.assert_close(batch["neg_audio"][1], torch.from_numpy(unpack_tensor(audio_neg, LatCol.AUDIO).copy()))


@pytest.mark.slow
def test_pairs_from_a_curated_folder_link_each_clip_to_its_own_negatives(latents_dir):
    positives = {r[LatCol.ID]: r for r in load_rows(latents_dir, "positives")}
    negatives = load_rows(latents_dir, "negatives")
    pairs = load_rows(latents_dir, "pairs")
    assert sorted(p["neg_id"] for p in pairs) == sorted(n[LatCol.ID] for n in negatives)
    by_id = {n[LatCol.ID]: n for n in negatives}
    for batch in iter_bucketed_batches(pairs, batch_size=4, drop_last=False):
        assert batch["video"].shape == batch["neg_video"].shape and batch["audio"].shape == batch["neg_audio"].shape
        for i, (clip_id, neg_id) in enumerate(zip(batch["ids"], batch["neg_ids"])):
            neg = by_id[neg_id]
            assert neg[LatCol.CLIP_ID] == clip_id and clip_id in positives
            kept, swapped = ("audio", "video") if neg[LatCol.SWAPPED] == "video" else ("video", "audio")
            torch.testing.assert_close(batch[f"neg_{kept}"][i], batch[kept][i])
            own = unpack_tensor(neg, LatCol.VIDEO if swapped == "video" else LatCol.AUDIO)
            torch.testing.assert_close(batch[f"neg_{swapped}"][i], torch.from_numpy(own.copy()))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["positives", "pairs"])  # negatives take the positives' filter path
def test_ray_datasets_match_the_in_process_rows(latents_dir, kind):
    ds = latent_dataset(latents_dir, kind)
    rows = list(rows_from_batches(ds.iter_batches(batch_size=3, batch_format="numpy")))
    expected = load_rows(latents_dir, kind)
    key = "neg_id" if kind == "pairs" else LatCol.ID
    assert sorted(r[key] for r in rows) == sorted(r[key] for r in expected)
    batches = list(iter_bucketed_batches(rows, batch_size=2, drop_last=False))
    assert sum(len(b["ids"]) for b in batches) == len(expected)
    for batch in batches:
        assert batch["video"].shape[0] == batch["audio"].shape[0] == batch["text"].shape[0] == len(batch["ids"])
        assert ("neg_video" in batch) == (kind == "pairs")


def test_unknown_kind_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown kind"):
        latent_dataset(tmp_path, "triplets")
    with pytest.raises(FileNotFoundError, match="run precompute_latents first"):
        load_rows(tmp_path, "positives")
