"""The latents table (``latents/``): precomputed VAE latents and text states, one row per clip
or hard negative, written by ``model/latents.py`` and read by ``model/data.py``.

A tensor is stored as three columns: ``<name>`` (raw C-order little-endian bytes),
``<name>_shape`` (list of int32) and ``<name>_dtype`` (numpy dtype name);
:func:`pack_tensor` / :func:`unpack_tensor` convert. Text states are stored trimmed to their
valid tokens, ``(num_tokens, dim)``, with the padded length in ``text_len`` /
``prior_text_len``: the reader pads them back and rebuilds the mask. Negative rows carry no
text (their caption is their clip's): the pairing takes the text from the positive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

LATENTS_SCHEMA_VERSION = "1.0.0"
_VERSION_KEY = b"javis.schema_version"


class LatentKind:
    POSITIVE = "positive"  # an accepted clip
    NEGATIVE = "negative"  # a hard negative of one clip


class LatCol:
    """Columns of ``latents/shard-*.parquet`` and ``latents/failures.parquet``."""

    ID = "id"  # the clip id (positives) or the negative id (negatives)
    CLIP_ID = "clip_id"  # the positive clip: equal to ``id`` for positives
    SOURCE_ID = "source_id"
    KIND = "kind"  # LatentKind
    FAMILY = "family"  # negatives: video_spatial | video_temporal | audio_spatial | audio_temporal
    OPERATION = "operation"  # negatives: the augmentation that built it
    SWAPPED = "swapped"  # negatives: "video" or "audio", the modality the negative replaces
    BUCKET = "bucket"  # "HxWxT": rows with the same bucket have the same tensor shapes
    BUCKET_HEIGHT = "bucket_height"
    BUCKET_WIDTH = "bucket_width"
    BUCKET_FRAMES = "bucket_frames"
    FPS = "fps"
    DURATION_S = "duration_s"  # seconds encoded (bucket_frames / fps), from the clip's start
    NUM_SAMPLES = "num_samples"  # audio samples encoded (at audio_rate_hz)
    CAPTION = "caption"
    CAPTION_SOURCE = "caption_source"  # the column the caption came from, or "empty"
    VIDEO = "video_latent"  # (video_channels, T_lat, H_lat, W_lat)
    AUDIO = "audio_latent"  # (audio_channels, A_lat, F_lat)
    TEXT = "text_states"  # DiT text states (num_tokens, text_dim), trimmed to valid tokens
    TEXT_LEN = "text_len"  # the padded length the model expects
    PRIOR_TEXT = "prior_text_states"  # ST-Prior text states (num_tokens, prior_text_dim), trimmed
    PRIOR_TEXT_LEN = "prior_text_len"
    ENCODERS = "encoders"  # the encoder kind and classes that produced the row (JSON)
    # failures.parquet
    MEDIA_PATH = "media_path"
    ERROR_TYPE = "error_type"
    ERROR_MESSAGE = "error_message"
    UPDATED_AT = "updated_at"


TENSOR_COLUMNS = (LatCol.VIDEO, LatCol.AUDIO, LatCol.TEXT, LatCol.PRIOR_TEXT)


def shape_column(name: str) -> str:
    return f"{name}_shape"


def dtype_column(name: str) -> str:
    return f"{name}_dtype"


def _tensor_fields(name: str) -> list[pa.Field]:
    return [pa.field(name, pa.large_binary()), pa.field(shape_column(name), pa.list_(pa.int32())),
            pa.field(dtype_column(name), pa.string())]  # fmt: skip


def _versioned(fields: list[pa.Field], table: str) -> pa.Schema:
    meta = {_VERSION_KEY: LATENTS_SCHEMA_VERSION.encode(), b"javis.table": table.encode()}
    return pa.schema(fields, metadata=meta)


LATENTS_SCHEMA = _versioned(
    [
        pa.field(LatCol.ID, pa.string()),
        pa.field(LatCol.CLIP_ID, pa.string()),
        pa.field(LatCol.SOURCE_ID, pa.string()),
        pa.field(LatCol.KIND, pa.string()),
        pa.field(LatCol.FAMILY, pa.string()),
        pa.field(LatCol.OPERATION, pa.string()),
        pa.field(LatCol.SWAPPED, pa.string()),
        pa.field(LatCol.BUCKET, pa.string()),
        pa.field(LatCol.BUCKET_HEIGHT, pa.int32()),
        pa.field(LatCol.BUCKET_WIDTH, pa.int32()),
        pa.field(LatCol.BUCKET_FRAMES, pa.int32()),
        pa.field(LatCol.FPS, pa.float64()),
        pa.field(LatCol.DURATION_S, pa.float64()),
        pa.field(LatCol.NUM_SAMPLES, pa.int64()),
        pa.field(LatCol.CAPTION, pa.string()),
        pa.field(LatCol.CAPTION_SOURCE, pa.string()),
        *_tensor_fields(LatCol.VIDEO),
        *_tensor_fields(LatCol.AUDIO),
        *_tensor_fields(LatCol.TEXT),
        pa.field(LatCol.TEXT_LEN, pa.int32()),
        *_tensor_fields(LatCol.PRIOR_TEXT),
        pa.field(LatCol.PRIOR_TEXT_LEN, pa.int32()),
        pa.field(LatCol.ENCODERS, pa.string()),
    ],
    "latents",
)

#: ``latents/failures.parquet``: inputs of the last run that have no latent row, and why.
LATENT_FAILURE_SCHEMA = _versioned(
    [
        pa.field(LatCol.ID, pa.string()),
        pa.field(LatCol.CLIP_ID, pa.string()),
        pa.field(LatCol.KIND, pa.string()),
        pa.field(LatCol.FAMILY, pa.string()),
        pa.field(LatCol.OPERATION, pa.string()),
        pa.field(LatCol.MEDIA_PATH, pa.string()),
        pa.field(LatCol.ERROR_TYPE, pa.string()),
        pa.field(LatCol.ERROR_MESSAGE, pa.string()),
        pa.field(LatCol.UPDATED_AT, pa.timestamp("us", tz="UTC")),
    ],
    "latent_failures",
)


def pack_tensor(name: str, array: Any) -> dict[str, Any]:
    """The three columns of one tensor (numpy array or CPU torch tensor)."""
    a = np.ascontiguousarray(array.numpy() if hasattr(array, "numpy") else array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {name: a.tobytes(), shape_column(name): [int(n) for n in a.shape], dtype_column(name): a.dtype.name}


def unpack_tensor(row: dict[str, Any], name: str) -> np.ndarray:
    """The tensor ``name`` of a row (a dict as given by ``to_pylist`` or Ray's ``iter_rows``)."""
    data = row[name]
    if data is None:
        raise ValueError(f"row {row.get(LatCol.ID)!r} has no {name}")
    shape = tuple(int(n) for n in row[shape_column(name)])
    dtype = np.dtype(row[dtype_column(name)]).newbyteorder("<")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


#: Pair rows (``model.data``, kind "pairs"): the positive's columns, then its negative's id,
#: family, operation, swapped modality and the negative pair's latents under ``neg_``: the
#: negative's own latent for the swapped modality, the positive's for the other (the paper's
#: asynchronous pair: a synthesised video with the original audio, or the reverse).
NEG_PREFIX = "neg_"
PAIR_SCHEMA = _versioned(
    list(LATENTS_SCHEMA)
    + [pa.field(NEG_PREFIX + name, pa.string()) for name in (LatCol.ID, LatCol.FAMILY, LatCol.OPERATION, LatCol.SWAPPED)]
    + [f.with_name(NEG_PREFIX + f.name) for name in (LatCol.VIDEO, LatCol.AUDIO) for f in _tensor_fields(name)],
    "latent_pairs",
)
