"""Latent rows (``latents/``, see ``schemas/latents.py``) to torch batches of one shape.

Three kinds of rows:

- ``positives``: one accepted clip: video and audio latents, DiT and prior text states;
- ``negatives``: one hard negative: its video and audio latents, family, operation, swapped modality;
- ``pairs``: a positive joined with one of its negatives (one row per negative): the positive's
  columns plus ``neg_*`` (``schemas.latents.PAIR_SCHEMA``). The negative pair is the negative's
  latent for the swapped modality and the positive's latent for the other one.

Two ways to read them: :func:`latent_dataset` (a Ray Dataset, for Ray Train's
``get_dataset_shard``) and :func:`load_rows` (plain pyarrow, in-process: unit tests, sampling).
Either way, :func:`iter_bucketed_batches` groups rows by bucket (resolution and duration) and
:func:`collate` turns a group into tensors, so every batch has one shape:

=====================  =================================  ==========================================
key                    value                              note
=====================  =================================  ==========================================
``video``              float32 (B, Cv, T_lat, H_lat, W_lat)
``audio``              float32 (B, Ca, A_lat, F_lat)
``text``               float32 (B, text_len, text_dim)    zero where masked; absent for negatives
``text_mask``          bool (B, text_len)
``prior_text``         float32 (B, 77, prior_text_dim)    ImageBind states; absent for negatives
``prior_text_mask``    bool (B, 77)
``neg_video``          float32 like ``video``             pairs only
``neg_audio``          float32 like ``audio``             pairs only
``neg_swaps_video``    bool (B,)                          pairs only: True if the video is the negative
``ids`` / ``clip_ids``  list[str]                          ``neg_ids``, ``neg_families`` for pairs
``bucket``             str                                "HxWxT"
=====================  =================================  ==========================================

Preference pairs (``javis preference``, ``schemas/preference.py``) for the dpo stage read the same
two ways (:func:`preference_dataset`, :func:`load_preference_rows`) and batch with
``iter_bucketed_batches(..., collate_fn=collate_preference)``: ``video_w``, ``audio_w`` (winner),
``video_l``, ``audio_l`` (loser), ``text``, ``text_mask``, ``ids`` (pair ids), ``bucket``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from model.latents import SHARDS_DIR, latent_shards
from schemas.latents import NEG_PREFIX, PAIR_SCHEMA, LatCol, LatentKind, dtype_column, shape_column, unpack_tensor
from schemas.preference import PAIRS_DIR, TENSOR_COLUMNS, PrefCol

KINDS = ("positives", "negatives", "pairs")
_ROW_KIND = {"positives": LatentKind.POSITIVE, "negatives": LatentKind.NEGATIVE}


def _shard_paths(latents_dir: str | os.PathLike) -> list[Path]:
    paths = latent_shards(latents_dir)
    if not paths:
        raise FileNotFoundError(f"no latent shards in {latents_dir}/{SHARDS_DIR}: run precompute_latents first")
    return paths


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")


# ---- pairing ---------------------------------------------------------------------------------


def make_pair(positive: dict[str, Any], negative: dict[str, Any]) -> dict[str, Any]:
    """One pair row: the positive plus the asynchronous (video, audio) built from ``negative``."""
    if negative[LatCol.CLIP_ID] != positive[LatCol.ID]:
        raise ValueError(f"negative {negative[LatCol.ID]} belongs to {negative[LatCol.CLIP_ID]}, not {positive[LatCol.ID]}")
    if negative[LatCol.BUCKET] != positive[LatCol.BUCKET]:
        raise ValueError(f"negative {negative[LatCol.ID]} is in bucket {negative[LatCol.BUCKET]}, its clip in {positive[LatCol.BUCKET]}")
    swapped = negative[LatCol.SWAPPED]
    if swapped not in ("video", "audio"):
        raise ValueError(f"negative {negative[LatCol.ID]} has no swapped modality ({swapped!r})")
    row = {name: positive.get(name) for name in PAIR_SCHEMA.names if not name.startswith(NEG_PREFIX)}
    for name in (LatCol.ID, LatCol.FAMILY, LatCol.OPERATION, LatCol.SWAPPED):
        row[NEG_PREFIX + name] = negative[name]
    for modality, column in (("video", LatCol.VIDEO), ("audio", LatCol.AUDIO)):
        src = negative if modality == swapped else positive
        for name in (column, shape_column(column), dtype_column(column)):
            row[NEG_PREFIX + name] = src[name]
    return row


def pair_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair every negative with its own clip's positive (negatives without one are left out)."""
    rows = list(rows)
    positives = {r[LatCol.ID]: r for r in rows if r[LatCol.KIND] == LatentKind.POSITIVE}
    negatives = sorted((r for r in rows if r[LatCol.KIND] == LatentKind.NEGATIVE), key=lambda r: r[LatCol.ID])
    return [make_pair(positives[n[LatCol.CLIP_ID]], n) for n in negatives if n[LatCol.CLIP_ID] in positives]


def _pairs_of_group(group: pa.Table) -> pa.Table:
    return pa.Table.from_pylist(pair_rows(group.to_pylist()), schema=PAIR_SCHEMA)


# ---- reading ---------------------------------------------------------------------------------


def load_rows(latents_dir: str | os.PathLike, kind: str = "positives", shuffle_seed: int | None = None) -> list[dict[str, Any]]:
    """Every row of ``kind`` in process (no Ray), sorted by id or shuffled with ``shuffle_seed``."""
    _check_kind(kind)
    table = pq.read_table(_shard_paths(latents_dir))
    if kind == "pairs":
        rows = pair_rows(table.to_pylist())
    else:
        rows = table.filter(pc.equal(table.column(LatCol.KIND), _ROW_KIND[kind])).sort_by(LatCol.ID).to_pylist()
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    return rows


def latent_dataset(latents_dir: str | os.PathLike, kind: str = "positives", num_partitions: int | None = None) -> Any:
    """A ``ray.data.Dataset`` of rows of ``kind``. Pairs are built per clip with a ``groupby``
    (a hash shuffle) into ``num_partitions`` partitions, by default one per shard file up to 64:
    Ray's default of 200 partitions costs seconds of overhead on small data."""
    import ray
    from ray.data.expressions import col

    _check_kind(kind)
    paths = _shard_paths(latents_dir)  # a clear error when there is nothing to read
    # the folder, not the list of files: Ray 2.60 resolves a list of paths in threads that race on
    # importing fsspec's HTTP filesystem when aiohttp is missing, and the read fails
    ds = ray.data.read_parquet(str(Path(latents_dir) / SHARDS_DIR), file_extensions=["parquet"])
    if kind == "pairs":
        partitions = num_partitions or min(len(paths), 64)
        return ds.groupby(LatCol.CLIP_ID, num_partitions=partitions).map_groups(_pairs_of_group, batch_format="pyarrow")
    return ds.filter(expr=col(LatCol.KIND) == _ROW_KIND[kind])


# ---- batching --------------------------------------------------------------------------------


def _stack(rows: list[dict[str, Any]], column: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([unpack_tensor(r, column) for r in rows]).astype(np.float32))


def _padded_states(rows: list[dict[str, Any]], column: str, len_column: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Trimmed (n_i, D) states -> (B, L, D) zero-padded and a (B, L) mask; L from the rows."""
    states = [unpack_tensor(r, column) for r in rows]
    length = int(rows[0][len_column])
    if any(int(r[len_column]) != length for r in rows):
        raise ValueError(f"rows disagree on {len_column}: latents from different specs in one batch")
    out = torch.zeros(len(rows), length, states[0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, s in enumerate(states):
        out[i, : len(s)] = torch.from_numpy(s.astype(np.float32))
        mask[i, : len(s)] = True
    return out, mask


def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of one bucket -> the batch dict described in the module docstring."""
    if not rows:
        raise ValueError("cannot collate an empty list of rows")
    buckets = {r[LatCol.BUCKET] for r in rows}
    if len(buckets) != 1:
        raise ValueError(f"rows from several buckets in one batch: {sorted(buckets)}")
    batch: dict[str, Any] = {
        "video": _stack(rows, LatCol.VIDEO),
        "audio": _stack(rows, LatCol.AUDIO),
        "ids": [r[LatCol.ID] for r in rows],
        "clip_ids": [r[LatCol.CLIP_ID] for r in rows],
        "bucket": rows[0][LatCol.BUCKET],
    }
    has_text = [r.get(LatCol.TEXT) is not None for r in rows]
    if all(has_text):
        batch["text"], batch["text_mask"] = _padded_states(rows, LatCol.TEXT, LatCol.TEXT_LEN)
        if rows[0].get(LatCol.PRIOR_TEXT) is not None:  # JavisDiT++ latents (no ST-Prior) store none
            batch["prior_text"], batch["prior_text_mask"] = _padded_states(rows, LatCol.PRIOR_TEXT, LatCol.PRIOR_TEXT_LEN)
    elif any(has_text):
        raise ValueError("some rows have text states and some do not: mixed positives and negatives")
    if rows[0].get(NEG_PREFIX + LatCol.ID) is not None:
        batch["neg_video"] = _stack(rows, NEG_PREFIX + LatCol.VIDEO)
        batch["neg_audio"] = _stack(rows, NEG_PREFIX + LatCol.AUDIO)
        batch["neg_swaps_video"] = torch.tensor([r[NEG_PREFIX + LatCol.SWAPPED] == "video" for r in rows])
        batch["neg_ids"] = [r[NEG_PREFIX + LatCol.ID] for r in rows]
        batch["neg_families"] = [r[NEG_PREFIX + LatCol.FAMILY] for r in rows]
    return batch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch with its tensors on ``device`` (lists and strings as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def rows_from_batches(batches: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Rows out of Ray ``iter_batches`` output (pyarrow tables or dicts of numpy columns)."""
    for batch in batches:
        if isinstance(batch, pa.Table):
            yield from batch.to_pylist()
            continue
        columns = list(batch)
        for i in range(len(batch[columns[0]])):
            yield {c: batch[c][i] for c in columns}


def iter_bucketed_batches(
    rows: Iterable[dict[str, Any]], batch_size: int, drop_last: bool = True,
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] = collate,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Collated batches of ``batch_size`` rows that share a bucket, in arrival order of
    completion; with ``drop_last=False`` the partial batches follow at the end (by bucket)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    pending: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        group = pending.setdefault(row[LatCol.BUCKET], [])
        group.append(row)
        if len(group) == batch_size:
            yield collate_fn(pending.pop(row[LatCol.BUCKET]))
    if not drop_last:
        for key in sorted(pending):
            yield collate_fn(pending[key])


# ---- preference pairs (``javis preference``, ``schemas/preference.py``) ------------------------

#: what the dpo stage reads of a pair row; the media paths, scores and prompts stay on disk
PREFERENCE_COLUMNS = tuple(
    [PrefCol.PAIR_ID, PrefCol.BUCKET, PrefCol.TEXT_LEN]
    + [name for column in TENSOR_COLUMNS for name in (column, shape_column(column), dtype_column(column))]
)


def preference_shards(pref_dir: str | os.PathLike) -> list[Path]:
    """``PREF/pairs/shard-*.parquet``; a clear error when there are none."""
    paths = sorted((Path(pref_dir) / PAIRS_DIR).glob("*.parquet"))
    if not paths:
        raise FileNotFoundError(f"{pref_dir} has no preference pairs ({PAIRS_DIR}/*.parquet): run `javis preference`")
    return paths


def load_preference_rows(pref_dir: str | os.PathLike, pair_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Pair rows in process (no Ray), sorted by pair id; only ``pair_ids`` when given."""
    table = pq.read_table(preference_shards(pref_dir), columns=list(PREFERENCE_COLUMNS))
    if pair_ids is not None:
        table = table.filter(pc.is_in(table.column(PrefCol.PAIR_ID), pa.array(sorted(set(pair_ids)), pa.string())))
    return table.sort_by(PrefCol.PAIR_ID).to_pylist()


def preference_dataset(pref_dir: str | os.PathLike) -> Any:
    """A ``ray.data.Dataset`` of pair rows (the columns of :data:`PREFERENCE_COLUMNS` only)."""
    import ray

    preference_shards(pref_dir)  # a clear error when there is nothing to read
    return ray.data.read_parquet(str(Path(pref_dir) / PAIRS_DIR), file_extensions=["parquet"],
                                 columns=list(PREFERENCE_COLUMNS))  # fmt: skip


def collate_preference(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pair rows of one bucket -> ``{"video_w", "audio_w", "video_l", "audio_l": like video/audio,
    "text", "text_mask", "ids": pair ids, "bucket"}`` (the ``collate_fn`` of the dpo stage)."""
    if not rows:
        raise ValueError("cannot collate an empty list of pairs")
    buckets = {r[PrefCol.BUCKET] for r in rows}
    if len(buckets) != 1:
        raise ValueError(f"pairs from several buckets in one batch: {sorted(buckets)}")
    batch: dict[str, Any] = {
        "video_w": _stack(rows, PrefCol.WINNER_VIDEO), "audio_w": _stack(rows, PrefCol.WINNER_AUDIO),
        "video_l": _stack(rows, PrefCol.LOSER_VIDEO), "audio_l": _stack(rows, PrefCol.LOSER_AUDIO),
        "ids": [r[PrefCol.PAIR_ID] for r in rows], "bucket": rows[0][PrefCol.BUCKET],
    }  # fmt: skip
    for side in ("video", "audio"):
        if batch[f"{side}_w"].shape != batch[f"{side}_l"].shape:
            raise ValueError(f"winner and loser {side} latents differ in shape in bucket {batch['bucket']}")
    batch["text"], batch["text_mask"] = _padded_states(rows, PrefCol.TEXT, PrefCol.TEXT_LEN)
    return batch
