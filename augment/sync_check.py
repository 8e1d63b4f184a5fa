"""Negatives that are measurably negative: score each negative and its clip with a sync scorer
(:mod:`stages.av_sync`) and flag or drop a negative that does not score below its clip by a margin.

A negative meant to be asynchronous but scored as synchronous as its own clip teaches the
ST-Prior nothing (or the wrong thing). ``AugmentConfig.sync_check``: ``off`` (nothing scored),
``flag`` (every negative kept, ``sync_flagged`` true on the suspicious ones) or ``drop`` (those
are removed). Columns added to each negative: ``sync_score``, ``sync_positive_score``,
``sync_flagged``; counts per family go to ``negatives/manifest.json`` under ``sync_check``.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from typing import Any

from schemas import NegCol
from stages.av_sync import AvSyncConfig, SyncScorer, load_clip_for_sync, make_scorer
from stages.storage import Storage

SYNC_CHECKS = ("off", "flag", "drop")


@functools.lru_cache(maxsize=2)  # one scorer per worker process, not one per clip
def cached_scorer(config: AvSyncConfig) -> SyncScorer:
    return make_scorer(config)


def score_media(scorer: SyncScorer, config: AvSyncConfig, media: str | bytes) -> float:
    """The scorer's score of one clip: a local file, or its bytes."""
    if isinstance(media, bytes):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:  # the decoder reads a file
            f.write(media)
            f.flush()
            return score_media(scorer, config, f.name)
    frames, audio = load_clip_for_sync(media, scorer.fps, scorer.sample_rate, config.max_side)
    return float(scorer.score(frames, audio))


def _negative_media(row: dict[str, Any], out: Storage) -> str | bytes:
    if row.get(NegCol.MEDIA_BYTES) is not None:
        return row[NegCol.MEDIA_BYTES]
    rel = row[NegCol.MEDIA_PATH]
    return out.local_path(rel) if out.is_local else out.read_bytes(rel)


def check_negatives(
    rows: Sequence[dict[str, Any]], positive_media: str | bytes, out: Storage, mode: str, margin: float,
    config: AvSyncConfig,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:  # fmt: skip
    """(rows to keep, ``{family: {"checked": n, "flagged" or "dropped": m}}``). A negative is
    suspicious unless ``sync_score < sync_positive_score - margin``: with margin 0 a tie is
    suspicious, as it is a miss in ``javis sync-eval``'s paired accuracy; ``margin=-inf`` flags
    nothing, a huge margin everything. A dropped negative's media file is left for the caller's
    pruning of unreferenced files."""
    if mode == "off" or not rows:
        return list(rows), {}
    scorer = cached_scorer(config)
    positive = score_media(scorer, config, positive_media)
    key = "flagged" if mode == "flag" else "dropped"
    kept, counts = [], {}
    for row in rows:
        score = score_media(scorer, config, _negative_media(row, out))
        suspicious = not score < positive - margin  # a NaN score is suspicious too
        family = counts.setdefault(row[NegCol.FAMILY], {"checked": 0, key: 0})
        family["checked"] += 1
        family[key] += int(suspicious)
        if mode == "drop" and suspicious:
            continue
        kept.append({**row, NegCol.SYNC_SCORE: score, NegCol.SYNC_POSITIVE_SCORE: positive,
                     NegCol.SYNC_FLAGGED: suspicious})  # fmt: skip
    return kept, counts
