"""``javis sync-eval OUT``: how well a sync scorer tells real pairs from asynchronous ones.

The protocol of the JavisDiT paper's Table A4 (appendix D.4.2) on our own data. Positives are
the accepted clips of a run; negatives are each clip's negatives from ``javis augment``, one per
family (the first by ``negative_id``, so the choice is deterministic), the ``easy`` family
(caption-only audio) included when it was built. For every backend it reports

- AUROC of positives against all negatives (Mann-Whitney: the probability that a random positive
  scores above a random negative, ties counted half), and
- paired accuracy: the share of (positive, its own negative) pairs where the positive scores
  strictly higher,

overall and per negative family. ``--samples`` scores generated files (``javis sample``) too.
Clips are scored one after the other in this process (a run's clips number in the hundreds at
most for an evaluation; the scorer, once loaded, is reused for every clip).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.outputs import read_shards, require_run
from schemas import Col, NegCol
from stages.storage import Storage

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the maths (pure functions)


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """Area under the ROC curve of ``positives`` (label 1) against ``negatives`` (label 0): the
    Mann-Whitney U statistic over ``len(positives) * len(negatives)``, from average ranks so that
    a tie counts half. None when either side is empty."""
    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.arange(1, scores.size + 1)
    # tied scores share the mean of their ranks
    uniques, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    rank_sums = np.bincount(inverse, weights=ranks, minlength=uniques.size)
    ranks = (rank_sums / counts)[inverse]
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def paired_accuracy(pairs: Sequence[tuple[float, float]]) -> float | None:
    """Share of ``(positive score, negative score)`` pairs with the positive strictly higher
    (a tie is a miss: the metric did not tell them apart). None without pairs."""
    if not pairs:
        return None
    return float(np.mean([p > n for p, n in pairs]))


def summarize(positive_scores: Mapping[str, float], negatives: Iterable[tuple[str, str, float]]) -> dict[str, Any]:
    """``{"auroc", "accuracy", "pairs", "families": {family: {...}}}`` for one backend.

    ``positive_scores``: clip id -> score; ``negatives``: (clip id, family, score). Overall, the
    positives are the clips with at least one scored negative; per family, the clips with a
    negative of that family (each positive counts once in the AUROC, however many negatives it
    has). A negative whose positive has no score is left out."""
    by_family: dict[str, list[tuple[str, float]]] = {}
    for clip_id, family, score in negatives:
        if clip_id in positive_scores:
            by_family.setdefault(family, []).append((clip_id, score))
    families = {family: _metrics(positive_scores, rows) for family, rows in sorted(by_family.items())}
    return {**_metrics(positive_scores, [r for rows in by_family.values() for r in rows]), "families": families}


def _metrics(positive_scores: Mapping[str, float], negatives: list[tuple[str, float]]) -> dict[str, Any]:
    pairs = [(positive_scores[clip_id], score) for clip_id, score in negatives]
    positives = [positive_scores[c] for c in sorted({clip_id for clip_id, _ in negatives})]
    return {"auroc": auroc(positives, [n for _, n in pairs]), "accuracy": paired_accuracy(pairs), "pairs": len(pairs)}


# ---------------------------------------------------------------- what is scored


def eval_items(out: Storage, negatives_dir: str = "negatives") -> tuple[list[dict], list[dict]]:
    """(positives, negatives) to score: every accepted clip, and for each the first negative by
    ``negative_id`` of every family (``{"clip_id", "family", "negative_id", "media_path",
    "media_bytes"}``). ``FileNotFoundError`` when the run or its negatives are missing."""
    clips = read_shards(out)
    manifest_rel = f"{negatives_dir}/manifest.json"
    if not out.exists(manifest_rel):
        raise FileNotFoundError(f"{out.root} has no negatives: run `javis augment {out.root}` first")
    files = out.read_json(manifest_rel)["files"]
    tables = [out.read_parquet(f"{negatives_dir}/{f['path']}") for f in files]  # the committed shards
    negatives = pa.concat_tables(tables, promote_options="default") if tables else None
    if clips.num_rows == 0 or negatives is None or negatives.num_rows == 0:
        raise FileNotFoundError(f"{out.root} has no clips with negatives: run `javis augment {out.root}` first")
    positives = [
        {"clip_id": r[Col.ID], "media_path": r[Col.MEDIA_PATH], "media_bytes": r[Col.MEDIA_BYTES]}
        for r in clips.select([Col.ID, Col.MEDIA_PATH, Col.MEDIA_BYTES]).to_pylist()
    ]
    first: dict[tuple[str, str], dict] = {}
    for r in negatives.sort_by(NegCol.NEGATIVE_ID).to_pylist():
        first.setdefault((r[NegCol.CLIP_ID], r[NegCol.FAMILY]), r)
    chosen = [
        {"clip_id": c, "family": f, "negative_id": r[NegCol.NEGATIVE_ID], "media_path": r[NegCol.MEDIA_PATH],
         "media_bytes": r[NegCol.MEDIA_BYTES]}
        for (c, f), r in sorted(first.items())
    ]  # fmt: skip
    return sorted(positives, key=lambda p: p["clip_id"]), chosen


def sample_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The MP4 files among ``paths`` (a folder stands for the ``*.mp4`` files in it)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(path.glob("*.mp4"))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such sample file or folder: {path}")
    if not found:
        raise FileNotFoundError(f"no .mp4 files in {', '.join(map(str, paths))}")
    return found


# ---------------------------------------------------------------- scoring


def scorer_configs(backends: Sequence[str], overrides: Sequence[str]) -> dict[str, Any]:
    """backend name -> its :class:`AvSyncConfig` (defaults, then ``av_sync.key=value`` overrides,
    then the backend). ``ValueError`` for an unknown backend or a bad override."""
    from pipeline.config import _deep_merge, build_dataclass, parse_override
    from stages.av_sync import BACKENDS, AvSyncConfig

    values = dataclasses.asdict(AvSyncConfig())
    for text in overrides:
        parsed = parse_override(text if text.startswith("av_sync.") else f"av_sync.{text}")
        values = _deep_merge(values, parsed["av_sync"])
    configs = {}
    for name in dict.fromkeys(backends):  # in order, once each
        if name not in BACKENDS:
            raise ValueError(f"unknown sync backend {name!r} (known: {', '.join(BACKENDS)})")
        try:
            configs[name] = build_dataclass(AvSyncConfig, {**values, "backend": name}, "av_sync")
        except ValueError as e:  # e.g. a production backend without its weights
            raise ValueError(f"sync backend {name}: {e}") from e
    return configs


def _score_media(scorer: Any, config: Any, out: Storage | None, item: Mapping[str, Any]) -> float:
    from augment.sync_check import score_media

    if out is None:  # a sample file
        return score_media(scorer, config, item["path"])
    if item.get("media_bytes") is not None:
        return score_media(scorer, config, item["media_bytes"])
    rel = item["media_path"]
    return score_media(scorer, config, out.local_path(rel) if out.is_local else out.read_bytes(rel))


def _score_all(scorer: Any, config: Any, out: Storage | None, items: Sequence[Mapping[str, Any]], what: str) -> list:
    """A score per item, None where scoring failed (logged: one unreadable clip does not end the
    evaluation, but it is counted)."""
    scores = []
    for item in items:
        try:
            score = _score_media(scorer, config, out, item)
            scores.append(score if math.isfinite(score) else None)
        except Exception as e:  # the item boundary
            log.warning("%s %s: %s: %s", what, item.get("negative_id") or item.get("clip_id") or item.get("path"),
                        type(e).__name__, e)  # fmt: skip
            scores.append(None)
    return scores


def sync_eval(out: str | os.PathLike | None, backends: Sequence[str], overrides: Sequence[str] = (),
              samples: Sequence[str | os.PathLike] = (), negatives_dir: str = "negatives") -> dict[str, Any]:  # fmt: skip
    """``{"backends": {name: summary}}`` (see :func:`summarize`) for the run in ``out``, plus
    ``"samples": {file: {backend: score}}`` when ``samples`` are given; ``"failed"``: how many
    items a backend could not score (absent when none)."""
    from stages.av_sync import make_scorer

    configs = scorer_configs(backends, overrides)
    storage = require_run(out) if out is not None else None
    positives, negatives = eval_items(storage, negatives_dir) if storage is not None else ([], [])
    files = sample_files(samples) if samples else []
    result: dict[str, Any] = {}
    failed: dict[str, int] = {}
    for name, config in configs.items():
        try:
            scorer = make_scorer(config)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise ValueError(f"sync backend {name}: {e}") from e
        if storage is not None:
            pos = _score_all(scorer, config, storage, positives, "positive")
            neg = _score_all(scorer, config, storage, negatives, "negative")
            pos_of = {p["clip_id"]: s for p, s in zip(positives, pos) if s is not None}
            scored = [(n["clip_id"], n["family"], s) for n, s in zip(negatives, neg) if s is not None]
            result.setdefault("backends", {})[name] = summarize(pos_of, scored)
            if num_failed := sum(s is None for s in pos + neg):
                failed[name] = num_failed
        if files:
            scores = _score_all(scorer, config, None, [{"path": str(f)} for f in files], "sample")
            for f, s in zip(files, scores):
                result.setdefault("samples", {}).setdefault(str(f), {})[name] = s
    if failed:
        result["failed"] = failed
    return result


# ---------------------------------------------------------------- the table

# Table A4 of the JavisDiT paper (3,000 human-checked samples), for comparison
PAPER_A4 = {"av_align": (0.530, 0.525), "javisscore": (0.653, 0.751)}


def format_table(result: Mapping[str, Any]) -> str:
    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = []
    if result.get("backends"):
        lines.append(f"{'backend':<12} {'negatives':<16} {'auroc':>6} {'accuracy':>8} {'pairs':>6}")
        for name, summary in result["backends"].items():
            rows = [("all", summary)] + sorted(summary["families"].items())
            for family, m in rows:
                lines.append(f"{name:<12} {family:<16} {num(m['auroc']):>6} {num(m['accuracy']):>8} {m['pairs']:>6}")
            if name in PAPER_A4:
                lines.append(f"{'':<12} {'(paper, Tab. A4)':<16} {PAPER_A4[name][0]:>6.3f} {PAPER_A4[name][1]:>8.3f}")
    for name, count in result.get("failed", {}).items():
        lines.append(f"{name}: {count} clips could not be scored (see the warnings)")
    if result.get("samples"):
        names = list(next(iter(result["samples"].values())))
        lines.append("")
        lines.append(f"{'sample':<48} " + " ".join(f"{n:>12}" for n in names))
        for path, scores in result["samples"].items():
            lines.append(f"{path:<48} " + " ".join(f"{num(scores[n]):>12}" for n in names))
    return "\n".join(lines)
