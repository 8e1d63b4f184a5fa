"""Modality-aware ranking of one prompt's candidates into preference pairs (pure functions).

**Normalisation (per prompt, per reward).** Rewards live on different scales (an IoU, a 0-10
score, a cosine), and what matters for a pair is how a candidate compares with the other
candidates of the *same prompt*. Each reward ``r`` is z-scored over the prompt's scored candidates::

    z_r(c) = (x_r(c) - mean_r) / max(std_r, floor_r)        std: population (ddof = 0)

``floor_r`` is the reward's ``resolution`` (its smallest meaningful difference, declared by the
backend in ``stages/rewards.py``) times ``std_floor_scale``. Without the floor, candidates that
are all but identical (std -> 0) would get z-scores of +-1 from noise and form "clear" pairs; with
it, differences below the resolution stay below 1 in z. (Rank normalisation was rejected for the
same reason: it turns a 0.001 difference into a full rank step.)

**Scores.** modality score = mean of its rewards' z; overall = weighted mean of the scored
modalities' scores (``rewards.weight_<modality>``, over modalities with a backend and a positive
weight; an unscored modality takes part in neither the overall score nor the rule below).

**Pairing rule.** An unordered pair is oriented winner = the higher overall (ties: the smaller
candidate id), and is *eligible* only when

    overall(w) - overall(l) >= better_margin                       else overall_gap_below_margin
    score_m(w) - score_m(l) >= -worse_margin   for every modality m  else worse_in_<m>

(the first failing check, modalities in MODALITIES order, is the recorded reason), so a
candidate with good video and bad audio never beats one with fair video and fair audio. Eligible
pairs are taken greedily by the largest overall gap (ties: winner id, loser id), each candidate in
at most one pair (``candidate_already_paired``), at most ``max_pairs_per_prompt`` pairs
(``max_pairs_reached``); the rest are ``formed``. Every unordered pair of scored candidates gets
one decision row (the opposite orientation always fails the overall margin, so it is not listed).

Candidates end ``paired`` (winner or loser) or ``unpaired`` with: ``too_few_scored_candidates``
(the prompt has fewer than two), ``no_eligible_pair`` (no eligible pair includes it) or
``partners_taken`` (it had eligible pairs, but its partners or the prompt's quota were used).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stages.rewards import MODALITIES

FORMED = "formed"
GAP_BELOW_MARGIN = "overall_gap_below_margin"
ALREADY_PAIRED = "candidate_already_paired"
MAX_PAIRS = "max_pairs_reached"
TOO_FEW, NO_ELIGIBLE, PARTNERS_TAKEN = "too_few_scored_candidates", "no_eligible_pair", "partners_taken"
NORMALISATION = "per-prompt z-score, std floored at the reward's resolution"


def worse_in(modality: str) -> str:
    return f"worse_in_{modality}"


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    """The ``ranking`` section. Margins are in z units (per-prompt standard deviations)."""

    better_margin: float = 0.5  # the winner's overall score beats the loser's by at least this
    worse_margin: float = 0.3  # and is worse in no scored modality by more than this
    max_pairs_per_prompt: int = 2  # K candidates give at most K // 2 disjoint pairs anyway
    std_floor_scale: float = 1.0  # the z-score's std floor is this times each reward's resolution

    def __post_init__(self) -> None:
        if self.better_margin <= 0:
            raise ValueError("ranking.better_margin must be > 0 (a tie must never form a pair)")
        if self.worse_margin < 0:
            raise ValueError("ranking.worse_margin must be >= 0")
        if self.max_pairs_per_prompt < 1:
            raise ValueError("ranking.max_pairs_per_prompt must be >= 1")
        if self.std_floor_scale <= 0:
            raise ValueError("ranking.std_floor_scale must be > 0")


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    name: str
    modality: str
    resolution: float


@dataclasses.dataclass
class PromptRanking:
    """One prompt's outcome: per-candidate scores and states, the decisions and the formed pairs."""

    normalised: dict[str, dict[str, float]]  # candidate -> reward -> z
    modality_scores: dict[str, dict[str, float]]  # candidate -> modality -> score
    overall: dict[str, float]
    stats: dict[str, dict[str, float]]  # reward -> {"mean", "std", "std_used"}
    decisions: list[dict[str, Any]]
    pairs: list[tuple[str, str]]  # (winner, loser), in the order formed
    states: dict[str, dict[str, Any]]  # candidate -> {"state", "role", "pair_id", "reason"}


def pair_id(winner: str, loser: str) -> str:
    return f"{winner}>{loser}"


def zscores(values: Mapping[str, float], floor: float) -> tuple[dict[str, float], dict[str, float]]:
    """(candidate -> z, {"mean", "std", "std_used"}) for one reward over one prompt's candidates."""
    x = np.asarray(list(values.values()), np.float64)
    mean, std = float(x.mean()), float(x.std())
    used = max(std, floor)
    return {c: (v - mean) / used for c, v in values.items()}, {"mean": mean, "std": std, "std_used": used}


def modality_weights(weights: Mapping[str, float], specs: Sequence[RewardSpec]) -> dict[str, float]:
    """The modalities that count: a reward among ``specs`` and a positive weight."""
    present = {s.modality for s in specs}
    return {m: float(weights.get(m, 0.0)) for m in MODALITIES if m in present and weights.get(m, 0.0) > 0}


def rank_prompt(raw: Mapping[str, Mapping[str, float]], specs: Sequence[RewardSpec], weights: Mapping[str, float],
                config: RankingConfig) -> PromptRanking:  # fmt: skip
    """Rank one prompt's scored candidates (``raw``: candidate -> reward name -> raw score, every
    reward of ``specs`` present) and pair them (module docstring)."""
    ids = sorted(raw)
    counted = modality_weights(weights, specs)
    specs = [s for s in specs if s.modality in counted]
    for c in ids:
        missing = [s.name for s in specs if s.name not in raw[c]]
        assert not missing, f"candidate {c} lacks rewards {missing}: a scored candidate has every reward"
    normalised: dict[str, dict[str, float]] = {c: {} for c in ids}
    stats = {}
    if len(ids) >= 1:
        for s in specs:
            z, stats[s.name] = zscores({c: raw[c][s.name] for c in ids}, s.resolution * config.std_floor_scale)
            for c in ids:
                normalised[c][s.name] = z[c]
    modality_scores = {
        c: {m: float(np.mean([normalised[c][s.name] for s in specs if s.modality == m])) for m in counted} for c in ids
    }
    total = sum(counted.values())
    overall = {c: sum(w * modality_scores[c][m] for m, w in counted.items()) / total for c in ids}
    decisions, eligible = _judge_pairs(ids, overall, modality_scores, list(counted), config)
    pairs = _choose(eligible, config.max_pairs_per_prompt)
    return PromptRanking(normalised, modality_scores, overall, stats, decisions, pairs,
                         _states(ids, pairs, eligible))  # fmt: skip


def _judge_pairs(ids: list[str], overall: dict[str, float], scores: dict[str, dict[str, float]],
                 modalities: list[str], config: RankingConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    decisions, eligible = [], []
    for a, b in itertools.combinations(ids, 2):  # ids sorted: a < b
        w, lo = (a, b) if overall[a] >= overall[b] else (b, a)
        gaps = {m: scores[w][m] - scores[lo][m] for m in modalities}
        worst = min(modalities, key=lambda m: gaps[m])
        row = {"winner_id": w, "loser_id": lo, "overall_gap": overall[w] - overall[lo],
               "min_modality_gap": gaps[worst], "worst_modality": worst, "modality_gaps": gaps}  # fmt: skip
        if row["overall_gap"] < config.better_margin:
            row["reason"] = GAP_BELOW_MARGIN
        else:
            worse = [m for m in modalities if gaps[m] < -config.worse_margin]
            row["reason"] = worse_in(worse[0]) if worse else None
        decisions.append(row)
        if row["reason"] is None:
            eligible.append(row)
    return decisions, eligible


def _choose(eligible: list[dict[str, Any]], max_pairs: int) -> list[tuple[str, str]]:
    """Greedy by largest overall gap; sets the reasons of the eligible decision rows in place."""
    taken: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for row in sorted(eligible, key=lambda r: (-r["overall_gap"], r["winner_id"], r["loser_id"])):
        if row["winner_id"] in taken or row["loser_id"] in taken:
            row["reason"] = ALREADY_PAIRED
        elif len(pairs) >= max_pairs:
            row["reason"] = MAX_PAIRS
        else:
            row["reason"] = FORMED
            pairs.append((row["winner_id"], row["loser_id"]))
            taken.update((row["winner_id"], row["loser_id"]))
    return pairs


def _states(ids: list[str], pairs: list[tuple[str, str]], eligible: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    for w, lo in pairs:
        for c, role in ((w, "winner"), (lo, "loser")):
            states[c] = {"state": "paired", "role": role, "pair_id": pair_id(w, lo), "reason": None}
    in_eligible = {c for r in eligible for c in (r["winner_id"], r["loser_id"])}
    for c in ids:
        if c not in states:
            reason = TOO_FEW if len(ids) < 2 else PARTNERS_TAKEN if c in in_eligible else NO_ELIGIBLE
            states[c] = {"state": "unpaired", "role": None, "pair_id": None, "reason": reason}
    return states
