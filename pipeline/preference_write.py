"""The driver's half of ``javis preference``: every candidate's final state, the ranking per prompt,
and the tables and manifest of ``schemas/preference.py`` (see ``pipeline/preference.py``)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.preference_rank import NORMALISATION, PromptRanking, RewardSpec, rank_prompt
from schemas.latents import pack_tensor
from schemas.preference import (
    CANDIDATE_SCHEMA,
    CANDIDATES_FILE,
    DECISION_SCHEMA,
    DECISIONS_FILE,
    MANIFEST_FILE,
    PAIR_SCHEMA,
    PAIRS_DIR,
    PREFERENCE_SCHEMA_VERSION,
    PROMPT_SCHEMA,
    PROMPTS_FILE,
    CandCol,
    CandState,
    DecCol,
    PrefCol,
    PromptCol,
)  # fmt: skip
from stages.rewards import BACKENDS, MODALITIES, RESOLUTION
from stages.storage import Storage

_SCORE_COLUMN = {"audio": CandCol.SCORE_AUDIO, "video": CandCol.SCORE_VIDEO, "semantic": CandCol.SCORE_SEMANTIC,
                 "sync": CandCol.SCORE_SYNC}  # fmt: skip


def _write(storage: Storage, table: pa.Table, rel: str) -> dict[str, Any]:
    """Through the store's atomic write: a killed run leaves no half-written table."""
    size = storage.write_parquet(table, rel, compression="zstd")
    return {"path": Path(rel).name, "rows": table.num_rows, "bytes": size}


def _failed(row: dict, stage: str, result: dict | None, missing: str) -> None:
    """Mark ``row`` failed at ``stage`` with ``result``'s error (or ``missing`` when none came back)."""
    error = result or {CandCol.ERROR_TYPE: "Missing", CandCol.ERROR_MESSAGE: missing}
    row.update({CandCol.STATE: CandState.FAILED, CandCol.FAILED_STAGE: stage,
                CandCol.ERROR_TYPE: error[CandCol.ERROR_TYPE], CandCol.ERROR_MESSAGE: error[CandCol.ERROR_MESSAGE]})  # fmt: skip


def _base_rows(items: list[dict], generated: list[dict], scored: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """(one row per candidate: failed ones complete, scored ones awaiting the ranking; candidate ->
    raw scores of the scored ones)."""
    gen = {g[CandCol.CANDIDATE_ID]: g for g in generated}
    score = {s[CandCol.CANDIDATE_ID]: s for s in scored}
    rows, raw = [], {}
    for item in items:
        cid = item[CandCol.CANDIDATE_ID]
        row = {k: item[k] for k in (CandCol.CANDIDATE_ID, CandCol.PROMPT_ID, CandCol.PROMPT, CandCol.INDEX, CandCol.SEED)}
        g, s = gen.get(cid), score.get(cid)
        if g is None or g[CandCol.ERROR_TYPE]:
            _failed(row, "generate", g, "no generation result came back")
        else:
            row.update({CandCol.MEDIA: g[CandCol.MEDIA], CandCol.BUCKET: g[CandCol.BUCKET], "latents_path": g["latents_path"]})
            if s is None or s[CandCol.ERROR_TYPE]:
                _failed(row, "score", s, "no scoring result came back")
            else:
                raw[cid] = json.loads(s[CandCol.RAW])
                row.update({CandCol.RAW: s[CandCol.RAW], CandCol.DETAILS: s[CandCol.DETAILS]})
        rows.append(row)
    return rows, raw


def _apply_ranking(row: dict, ranking: PromptRanking) -> None:
    cid = row[CandCol.CANDIDATE_ID]
    state = ranking.states[cid]
    row.update({CandCol.STATE: state["state"], CandCol.ROLE: state["role"], CandCol.PAIR_ID: state["pair_id"],
                CandCol.REASON: state["reason"], CandCol.OVERALL: ranking.overall[cid],
                CandCol.NORMALISED: json.dumps(ranking.normalised[cid], sort_keys=True)})  # fmt: skip
    for m, score in ranking.modality_scores[cid].items():
        row[_SCORE_COLUMN[m]] = score


def _decision_rows(pid: str, ranking: PromptRanking) -> list[dict]:
    from pipeline.preference_rank import FORMED, pair_id

    return [{DecCol.PROMPT_ID: pid, DecCol.WINNER_ID: d["winner_id"], DecCol.LOSER_ID: d["loser_id"],
             DecCol.FORMED: d["reason"] == FORMED, DecCol.REASON: d["reason"],
             DecCol.PAIR_ID: pair_id(d["winner_id"], d["loser_id"]) if d["reason"] == FORMED else None,
             DecCol.OVERALL_GAP: d["overall_gap"], DecCol.MIN_MODALITY_GAP: d["min_modality_gap"],
             DecCol.WORST_MODALITY: d["worst_modality"], DecCol.MODALITY_GAPS: json.dumps(d["modality_gaps"], sort_keys=True)}
            for d in ranking.decisions]  # fmt: skip


def _pair_row(output: Path, winner: dict, loser: dict, ranking: PromptRanking, checkpoint: str, run_id: str) -> dict:
    w, lo = np.load(output / winner["latents_path"]), np.load(output / loser["latents_path"])
    wid, lid = winner[CandCol.CANDIDATE_ID], loser[CandCol.CANDIDATE_ID]
    gaps = {m: ranking.modality_scores[wid][m] - ranking.modality_scores[lid][m] for m in ranking.modality_scores[wid]}
    scores = {role: {"candidate_id": c[CandCol.CANDIDATE_ID], "raw": json.loads(c[CandCol.RAW]),
                     "normalised": ranking.normalised[c[CandCol.CANDIDATE_ID]],
                     "modality": ranking.modality_scores[c[CandCol.CANDIDATE_ID]],
                     "overall": ranking.overall[c[CandCol.CANDIDATE_ID]]} for role, c in (("winner", winner), ("loser", loser))}  # fmt: skip
    return {PrefCol.PAIR_ID: winner[CandCol.PAIR_ID], PrefCol.PROMPT_ID: winner[CandCol.PROMPT_ID],
            PrefCol.PROMPT: winner[CandCol.PROMPT], PrefCol.BUCKET: winner[CandCol.BUCKET],
            PrefCol.WINNER_ID: wid, PrefCol.LOSER_ID: lid, PrefCol.WINNER_MEDIA: winner[CandCol.MEDIA],
            PrefCol.LOSER_MEDIA: loser[CandCol.MEDIA],
            **pack_tensor(PrefCol.WINNER_VIDEO, w["video_latent"]), **pack_tensor(PrefCol.WINNER_AUDIO, w["audio_latent"]),
            **pack_tensor(PrefCol.LOSER_VIDEO, lo["video_latent"]), **pack_tensor(PrefCol.LOSER_AUDIO, lo["audio_latent"]),
            **pack_tensor(PrefCol.TEXT, w["text_states"]), PrefCol.TEXT_LEN: int(w["text_len"]),
            PrefCol.WINNER_OVERALL: ranking.overall[wid], PrefCol.LOSER_OVERALL: ranking.overall[lid],
            PrefCol.OVERALL_GAP: ranking.overall[wid] - ranking.overall[lid], PrefCol.MIN_MODALITY_GAP: min(gaps.values()),
            PrefCol.SCORES: json.dumps(scores, sort_keys=True), PrefCol.CHECKPOINT: checkpoint, PrefCol.RUN_ID: run_id}  # fmt: skip


def write_outputs(output: Path, checkpoint: str, config: Any, prompts: list[dict], items: list[dict],
                  generated: list[dict], scored: list[dict], versions: dict) -> dict[str, Any]:  # fmt: skip
    """Rank every prompt and write pairs, candidates, decisions, prompts and (last) the manifest."""
    from pipeline.outputs import new_generation

    rewards = config.rewards
    specs = [RewardSpec(n, BACKENDS[n], RESOLUTION[n]) for n in rewards.backends]
    weights = {m: getattr(rewards, f"weight_{m}") for m in MODALITIES}
    rows, raw = _base_rows(items, generated, scored)
    run_id = new_generation()
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row[CandCol.PROMPT_ID], []).append(row)
    decisions, prompt_rows, pairs = [], [], []
    for p in prompts:
        pid, group = p["prompt_id"], by_prompt[p["prompt_id"]]
        ranking = rank_prompt({r[CandCol.CANDIDATE_ID]: raw[r[CandCol.CANDIDATE_ID]] for r in group
                               if r[CandCol.CANDIDATE_ID] in raw}, specs, weights, config.ranking)  # fmt: skip
        for row in group:
            if row[CandCol.CANDIDATE_ID] in raw:
                _apply_ranking(row, ranking)
        decisions += _decision_rows(pid, ranking)
        of = {r[CandCol.CANDIDATE_ID]: r for r in group}
        pairs += [_pair_row(output, of[w], of[lo], ranking, checkpoint, run_id) for w, lo in ranking.pairs]
        prompt_rows.append({PromptCol.PROMPT_ID: pid, PromptCol.PROMPT: p["prompt"], PromptCol.SOURCE: p["source"],
                            PromptCol.NUM_CANDIDATES: len(group), PromptCol.NUM_SCORED: len(ranking.overall),
                            PromptCol.NUM_FAILED: len(group) - len(ranking.overall), PromptCol.NUM_PAIRS: len(ranking.pairs),
                            PromptCol.NORMALISATION: json.dumps(ranking.stats, sort_keys=True)})  # fmt: skip
    pairs.sort(key=lambda r: r[PrefCol.PAIR_ID])
    storage = Storage(output)
    files = [_write(storage, pa.Table.from_pylist(pairs[i : i + config.pairs_per_shard], schema=PAIR_SCHEMA),
                    f"{PAIRS_DIR}/shard-{n:05d}.parquet")
             for n, i in enumerate(range(0, max(1, len(pairs)), config.pairs_per_shard))]  # fmt: skip
    candidates = [{k: v for k, v in r.items() if k != "latents_path"} for r in rows]
    _write(storage, pa.Table.from_pylist(sorted(candidates, key=lambda r: r[CandCol.CANDIDATE_ID]),
                                         schema=CANDIDATE_SCHEMA), CANDIDATES_FILE)  # fmt: skip
    _write(storage, pa.Table.from_pylist(decisions, schema=DECISION_SCHEMA), DECISIONS_FILE)
    _write(storage, pa.Table.from_pylist(prompt_rows, schema=PROMPT_SCHEMA), PROMPTS_FILE)
    manifest = _manifest(checkpoint, config, generated, scored, candidates, decisions, prompt_rows, files, versions, run_id)
    storage.write_json(MANIFEST_FILE, manifest)
    return manifest


def _manifest(checkpoint: str, config: Any, generated: list[dict], scored: list[dict], candidates: list[dict],
              decisions: list[dict], prompt_rows: list[dict], files: list[dict], versions: dict, run_id: str) -> dict:  # fmt: skip
    rewards = config.rewards
    states = Counter(c[CandCol.STATE] for c in candidates)
    generator = next((json.loads(g["generator"]) for g in generated if g.get("generator")), {})
    reward_versions = next((json.loads(s["reward_versions"]) for s in scored if s.get("reward_versions")), {})
    counts = {"prompts": len(prompt_rows), "candidates": len(candidates), "paired": states[CandState.PAIRED],
              "unpaired": states[CandState.UNPAIRED], "failed": states[CandState.FAILED],
              "pairs": sum(r[PromptCol.NUM_PAIRS] for r in prompt_rows),
              "failed_by_stage": dict(Counter(c[CandCol.FAILED_STAGE] for c in candidates if c.get(CandCol.FAILED_STAGE))),
              "unpaired_by_reason": dict(Counter(c[CandCol.REASON] for c in candidates if c.get(CandCol.REASON))),
              "decisions_by_reason": dict(Counter(d[DecCol.REASON] for d in decisions))}  # fmt: skip
    assert counts["candidates"] == counts["paired"] + counts["unpaired"] + counts["failed"], counts
    scored_modalities = rewards.scored_modalities
    return {
        "schema_version": PREFERENCE_SCHEMA_VERSION, "run_id": run_id, "checkpoint": checkpoint,
        "model": generator.get("model"), "stage": generator.get("stage"), "preset": generator.get("preset"),
        "encoders": generator.get("encoders"), "latent_spec": generator.get("latent_spec"),
        "latent_spec_sizes": generator.get("latent_spec_sizes"), "prior": generator.get("prior"),
        "generation": {k: getattr(config, k) for k in ("num_candidates", "steps", "cfg", "seed", "num_frames",
                                                         "resolution", "use_ema")},
        "rewards": {"backends": [{"name": n, "modality": BACKENDS[n], "version": reward_versions.get(n),
                                  "resolution": RESOLUTION[n]} for n in rewards.backends],
                    "scored_modalities": list(scored_modalities), "unscored_modalities": rewards.unscored(),
                    "modality_weights": {m: getattr(rewards, f"weight_{m}") for m in scored_modalities},
                    "config": dataclasses.asdict(rewards)},
        "normalisation": {"method": NORMALISATION, "std_floor_scale": config.ranking.std_floor_scale,
                          "per_prompt": PROMPTS_FILE},
        "ranking": dataclasses.asdict(config.ranking),
        "counts": counts, "files": files, "versions": versions,
    }  # fmt: skip
