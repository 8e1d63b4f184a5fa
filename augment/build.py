"""Per-clip work of ``javis augment``, without Ray: supporting metadata, then negatives.

1. :func:`clip_metadata`: separate the clip's sound (sources and their active intervals) and
   extract its moving objects (the trajectory pool is built from every clip's objects).
2. :func:`clip_negatives`: assemble the :class:`ClipContext` (the clip, its sources, a window of
   the source video's audio around it, separated sources of donor clips, the trajectory pool
   without the clip's own objects), draw one operation per family, build each negative and
   encode it as an MP4.

Donor clips and the pool sample are chosen by generators seeded from the run seed and the clip
id, so a rerun builds byte-identical negatives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import av
import numpy as np

from augment import audio_ops, video_ops
from augment.context import FAMILIES, ClipContext, Interval, MissingInput
from augment.easy import EASY, EasyConfig, easy_negative
from augment.easy import OPERATION as EASY_OPERATION
from augment.media import load_audio_window, load_clip, write_clip
from augment.negatives import Drawn, apply_drawn, draw_negatives, family_seed
from augment.separation import SeparationConfig, separate_sources
from augment.sync_check import SYNC_CHECKS
from augment.trajectories import TrajectoryConfig, decode_trajectory, encode_trajectory, extract_trajectories
from schemas import Col, NegCol
from stages.av_sync import AvSyncConfig
from stages.cut import measure_clip
from stages.storage import Storage

OPS = (*video_ops.OPS, *audio_ops.OPS)
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    seed: int = 0  # with the clip id, decides every random choice: same seed, same negatives
    families: tuple[str, ...] = FAMILIES  # which families to build (one negative each per clip)
    max_side: int = 256  # frames of negatives are at most this large (the prior trains on small frames)
    source_context_s: float = 20.0  # audio shift draws its window within this distance of the clip
    num_donors: int = 2  # other clips whose separated sources may be added to this one
    pool_size: int = 64  # trajectories kept in the pool (a seeded sample of all clips' objects)
    negatives_dir: str = "negatives"  # relative to the output folder
    embed_media: bool = False  # store negative bytes in the rows instead of files
    crf: int = 20  # x264 quality of the negatives
    separation: SeparationConfig = dataclasses.field(default_factory=SeparationConfig)
    trajectories: TrajectoryConfig = dataclasses.field(default_factory=TrajectoryConfig)
    easy: EasyConfig = dataclasses.field(default_factory=EasyConfig)  # caption-only audio (augment/easy.py)
    # score every negative and its clip with `sync` (augment/sync_check.py): "off", "flag" (keep,
    # mark sync_flagged) or "drop" the negatives not scoring below their clip by sync_margin
    sync_check: str = "off"
    sync_margin: float = 0.0  # score units of the backend; -.inf: flag nothing
    sync: AvSyncConfig = dataclasses.field(default_factory=AvSyncConfig)  # backend av_align runs on CPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise ValueError(f"augment.families must be a non-empty subset of {FAMILIES}, got {self.families}")
        if self.max_side < 32 or self.num_donors < 0 or self.pool_size < 0 or self.source_context_s < 0:
            raise ValueError("augment.max_side >= 32 and non-negative num_donors, pool_size, source_context_s")
        if self.seed < 0:
            raise ValueError("augment.seed must be >= 0")
        if self.sync_check not in SYNC_CHECKS:
            raise ValueError(f"augment.sync_check must be one of {SYNC_CHECKS}, got {self.sync_check!r}")


def clip_media(row: dict[str, Any], out: Storage) -> str | bytes:
    """The clip's media: its embedded bytes, its file in a local output folder, or the bytes of
    its object on object storage (a clip is small enough to read whole)."""
    if row.get(Col.MEDIA_BYTES) is not None:
        return row[Col.MEDIA_BYTES]
    return out.local_path(row[Col.MEDIA_PATH]) if out.is_local else out.read_bytes(row[Col.MEDIA_PATH])


def _intervals_json(intervals: Sequence[Interval]) -> str:
    return json.dumps([[round(i.start_s, 4), round(i.end_s, 4)] for i in intervals])


def clip_metadata(row: dict[str, Any], out: Storage, config: AugmentConfig) -> dict[str, Any]:
    """Active sound intervals (JSON) and the clip's moving objects (encoded trajectories)."""
    frames, fps, audio, rate = load_clip(clip_media(row, out), config.max_side)
    _, active = separate_sources(audio, rate, config.separation)
    objects = extract_trajectories(frames, fps, config.trajectories)
    return {
        "clip_id": row[Col.ID],
        "active_json": _intervals_json(active),
        "trajectories": [encode_trajectory(t) for t in objects],
    }


def pick_donors(clip_id: str, all_clip_ids: Sequence[str], config: AugmentConfig) -> list[str]:
    others = sorted(c for c in all_clip_ids if c != clip_id)
    if not others or config.num_donors == 0:
        return []
    rng = np.random.default_rng(family_seed(config.seed, clip_id, "donors"))
    return [others[i] for i in rng.choice(len(others), size=min(config.num_donors, len(others)), replace=False)]


def pool_for(clip_id: str, pool: Sequence[tuple[str, bytes]], config: AugmentConfig) -> list[bytes]:
    """A seeded sample of other clips' trajectories (never the clip's own objects)."""
    others = [data for owner, data in pool if owner != clip_id]
    if len(others) <= config.pool_size:
        return others
    rng = np.random.default_rng(family_seed(config.seed, clip_id, "pool"))
    return [others[i] for i in sorted(rng.choice(len(others), size=config.pool_size, replace=False))]


def build_context(
    row: dict[str, Any], out: Storage, config: AugmentConfig, donors: Sequence[dict[str, Any]], pool: Sequence[bytes]
) -> ClipContext:
    frames, fps, audio, rate = load_clip(clip_media(row, out), config.max_side)
    sources, active = separate_sources(audio, rate, config.separation)
    channels = audio.shape[0]
    start = max(0.0, row[Col.CLIP_START_S] - config.source_context_s)
    source_audio = load_audio_window(
        row[Col.SRC_PATH], rate, channels, start, row[Col.CLIP_END_S] + config.source_context_s
    )
    donor_sources = []
    for donor in donors:  # separated at this clip's rate and channel count
        try:
            donor_audio = load_audio_window(clip_media(donor, out), rate, channels)
        except (OSError, ValueError, av.FFmpegError) as e:  # a broken donor is skipped, not fatal
            log.warning("clip %s: donor %s unreadable, skipped: %s", row[Col.ID], donor[Col.ID], e)
            continue
        donor_sources += separate_sources(donor_audio, rate, config.separation)[0]
    return ClipContext(
        clip_id=row[Col.ID],
        frames=frames,
        fps=fps,
        audio=audio,
        rate_hz=rate,
        active=active,
        sources=sources,
        source_audio=source_audio,
        clip_offset_s=row[Col.CLIP_START_S] - start,
        donor_sources=donor_sources,
        trajectories=[decode_trajectory(data) for data in pool],
    )


def _store(data: bytes, negative_id: str, clip_id: str, out: Storage, config: AugmentConfig) -> dict[str, Any]:
    if config.embed_media:
        return {NegCol.MEDIA_BYTES: data, NegCol.MEDIA_PATH: None}
    rel = f"{config.negatives_dir}/media/{clip_id}/{negative_id}.mp4"
    out.write_bytes(rel, data)  # atomic: a killed run never leaves half a negative
    return {NegCol.MEDIA_BYTES: None, NegCol.MEDIA_PATH: rel}


def clip_negatives(ctx: ClipContext, row: dict[str, Any], out: Storage, config: AugmentConfig) -> tuple[list[dict], dict]:
    """(negative rows, {family: why skipped}) for one clip."""
    rows, skipped = [], {}
    for drawn in draw_negatives(ctx, OPS, config.seed, config.families):
        if drawn.op is None:
            skipped[drawn.family] = drawn.skipped
            continue
        frames, audio = apply_drawn(ctx, drawn, OPS)
        rows.append(_encode_negative(ctx, row, drawn, frames, audio, out, config))
    if config.easy.enabled:  # the clip's own frames with audio generated from its text alone
        seed = family_seed(config.seed, ctx.clip_id, EASY)
        try:
            audio, params = easy_negative(ctx, row, config.easy, seed)
        except MissingInput as e:
            skipped[EASY] = f"{EASY_OPERATION}: {e}"
        else:
            drawn = Drawn(EASY, EASY_OPERATION, params, seed)
            rows.append(_encode_negative(ctx, row, drawn, ctx.frames, audio, out, config))
    return rows, skipped


def _encode_negative(
    ctx: ClipContext, row: dict[str, Any], drawn: Drawn, frames: np.ndarray, audio: np.ndarray, out: Storage,
    config: AugmentConfig,
) -> dict[str, Any]:  # fmt: skip
    """The MP4 of (frames, audio), checked for A/V duration, stored; its negatives row."""
    data = write_clip(frames, ctx.fps, audio, ctx.rate_hz, config.crf)
    measured, max_frame_s = measure_clip(data)
    diff = measured[Col.CUT_AV_DIFF_S]
    if diff is None or diff > max(max_frame_s, 1 / ctx.fps) + 1e-6:
        raise AssertionError(f"negative {drawn.op} of {ctx.clip_id}: audio and video differ by {diff} s")
    return {
        NegCol.NEGATIVE_ID: drawn.negative_id,
        NegCol.CLIP_ID: ctx.clip_id,
        NegCol.SOURCE_ID: row[Col.SOURCE_ID],
        NegCol.FAMILY: drawn.family,
        NegCol.OPERATION: drawn.op,
        NegCol.PARAMS_JSON: json.dumps(drawn.params, sort_keys=True),
        NegCol.SEED: drawn.seed,
        NegCol.MEDIA_SIZE_BYTES: len(data),
        NegCol.MEDIA_SHA256: hashlib.sha256(data).hexdigest(),
        NegCol.DURATION_S: measured[Col.CUT_VIDEO_DURATION_S],
        **_store(data, drawn.negative_id, ctx.clip_id, out, config),
    }
