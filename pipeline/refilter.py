"""Re-threshold a finished run from its stored scores: nothing is decoded or recomputed.

``javis refilter OUT --set motion.min_flow=0.05`` reads the staged rows, re-applies every
re-thresholdable stage's ``decide`` (pure functions of the stored score columns) in pipeline
order with the new config, and rewrites the outputs, the manifest and ``config.json``.

Filters skip rows that an earlier filter rejected, so a looser threshold can let a clip through
to a filter that never scored it. Such a clip cannot be decided from stored scores: it becomes
``failed`` at that filter (``NeedsRescore``), and the next ``javis run`` with the same settings
computes what is missing (failed items are retried). The same holds for a clip that becomes
acceptable but whose media file was already pruned.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.card import write_card
from pipeline.config import Config, config_from_dict, load_config_over
from pipeline.dag import StageSpec, active_stages, apply_balance, funnel_stages
from pipeline.funnel import FunnelRow, check_invariant, compute_funnel, count_states
from pipeline.outputs import CONFIG_JSON, MANIFEST, drop_generations, read_ledger, require_run, write_outputs
from pipeline.staging import Staging
from schemas import WORK_SCHEMA, Col, Kind, State, conform
from stages.base import now_utc
from stages.storage import Storage

NEEDS_RESCORE = "NeedsRescore"


def _reset(row: dict[str, Any]) -> None:
    for col in (Col.STAGE, Col.REASON, Col.METRIC, Col.VALUE, Col.THRESHOLD, Col.DETAIL, Col.BACKEND,
                Col.CONFIG_HASH, Col.ERROR_TYPE, Col.ERROR_MESSAGE):  # fmt: skip
        row[col] = None


def _media_present(row: dict[str, Any], out: Storage) -> bool:
    return row[Col.MEDIA_BYTES] is not None or (row[Col.MEDIA_PATH] is not None and out.exists(row[Col.MEDIA_PATH]))


def redecide(row: dict[str, Any], specs: Sequence[StageSpec], config: Config, out: Storage) -> dict[str, Any]:
    """The row's new terminal state under ``config``; rows decided before the first
    re-thresholdable stage (or failed for other reasons) are returned unchanged."""
    names = [s.name for s in specs]
    first = next((i for i, s in enumerate(specs) if s.decide is not None), len(specs))
    ended_at = names.index(row[Col.STAGE]) if row[Col.STAGE] in names else len(specs)
    if row[Col.KIND] != Kind.CLIP or ended_at < first:
        return row
    if row[Col.STATE] == State.FAILED and row[Col.ERROR_TYPE] != NEEDS_RESCORE:
        return row
    original = row
    row = dict(row)
    _reset(row)
    row[Col.UPDATED_AT] = now_utc()
    for index, spec in enumerate(specs[first:], start=first):
        if spec.decide is None:  # a model's judgement (e.g. a caption): it stands as made
            if index == ended_at:
                return original  # it ended the row before: it still does
            if index > ended_at:  # it ended earlier (an accepted row ends after every stage)
                return _needs_rescore(row, spec.name, "this clip never reached this stage")
            continue
        if row[spec.ran_column] is None:  # this stage never scored the row
            return _needs_rescore(row, spec.name, "no stored scores for this stage")
        rejection = spec.decide(getattr(config, spec.name), row)
        if rejection is not None:
            row.update({Col.STATE: State.REJECTED, Col.STAGE: spec.name, Col.REASON: rejection.reason,
                        Col.METRIC: rejection.metric, Col.VALUE: rejection.value, Col.THRESHOLD: rejection.threshold,
                        Col.DETAIL: rejection.detail, Col.BACKEND: row[spec.ran_column],
                        Col.CONFIG_HASH: config.stage_hash(spec.name)})  # fmt: skip
            return row
    if not _media_present(row, out):
        return _needs_rescore(row, specs[-1].name, "the clip's media file was pruned when it was rejected")
    row[Col.STATE] = State.ACCEPTED
    return row


def _needs_rescore(row: dict[str, Any], stage: str, why: str) -> dict[str, Any]:
    row.update({Col.STATE: State.FAILED, Col.STAGE: stage, Col.ERROR_TYPE: NEEDS_RESCORE,
                Col.ERROR_MESSAGE: f"{why}: rerun `javis run` with the same settings to compute it"})  # fmt: skip
    return row


def refilter(out: str | os.PathLike, overrides: Sequence[str], dry_run: bool = False) -> list[FunnelRow]:
    """Apply ``overrides`` to the run in ``out`` from stored scores; returns the new funnel."""
    out = require_run(out)
    old_config = config_from_dict(out.read_json(CONFIG_JSON))
    config = load_config_over(old_config, overrides)
    specs = active_stages(config)
    if not any(s.decide for s in specs):
        raise ValueError("no stage of this run can be re-thresholded from stored scores (no quality filter ran)")
    if [s.name for s in specs] != [s.name for s in active_stages(old_config)]:
        raise ValueError("refilter cannot enable or disable stages: rerun `javis run` for that")
    ledger_ids = set(read_ledger(out).column(Col.ID).to_pylist())
    staging = Staging(out)
    staged = staging.load()
    rows = staged.filter(pc.is_in(staged.column(Col.ID), value_set=pa.array(sorted(ledger_ids))))
    new_rows = conform([redecide(r, specs, config, out) for r in rows.to_pylist()], WORK_SCHEMA)
    num_sources = sum(1 for k in new_rows.column(Col.KIND).to_pylist() if k == Kind.SOURCE)
    balanced = apply_balance(new_rows, config)  # global: recomputed, never staged
    funnel = compute_funnel(balanced, funnel_stages(config), num_sources)
    check_invariant(balanced, funnel)
    if dry_run:
        return funnel
    staging.write(new_rows)
    files = write_outputs(out, balanced, config.output)
    out.write_json(CONFIG_JSON, config.to_dict())
    manifest = out.read_json(MANIFEST)
    manifest["config"] = config.to_dict()
    manifest["config_hashes"] = {s.name: config.stage_hash(s.name) for s in specs}
    manifest["funnel"] = [f.to_json() for f in funnel]
    manifest["counts"] = count_states(balanced)
    manifest["files"] = files
    # rows keep the run_id of the `javis run` that scored them; the refilter is recorded here
    manifest.setdefault("refilters", []).append(
        {"at": dt.datetime.now(dt.timezone.utc).isoformat(), "overrides": list(overrides)}
    )
    write_card(out, manifest)
    out.write_json(MANIFEST, manifest)  # last: it commits the new outputs
    drop_generations(out, files.get("generation"))
    return funnel
