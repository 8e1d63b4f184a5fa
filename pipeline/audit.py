"""Answer auditors from a finished run's ledger: the funnel per stage and per reason, and
exactly what happened to one source or clip.

JSON contract (``javis audit OUT --json [--items]``), kept stable for dashboards:
``{"funnel": [{"stage", "in", "passed", "rejected", "failed", "unit", "reasons"}...],
"items": [{"id", "kind", "source_id", "input", "state", "stage", "reason", "start_s",
"end_s", "media", "metrics", "detail", "error"}...]}``.

Since schema 1.3.0 each item also carries the decision and its provenance: ``"metric"``,
``"value"``, ``"threshold"`` (the score a rejection was decided on, null otherwise),
``"config_hash"`` and ``"backend"`` (of the deciding stage), ``"time"`` (when the row reached
its state, ISO 8601 UTC), ``"run_id"`` (the ``javis run`` that decided it), ``"thumb"`` (the
clip's thumbnail strip, relative to the output folder, or null) and ``"components"``
(``{column: value}``: the non-null parts of a score, e.g. the image-quality sub-scores behind
``aesthetic_iq_mean``; ``schemas.component_columns`` says which score each explains). Keys
are only ever added, never renamed or removed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.dag import STAGES
from pipeline.funnel import compute_funnel
from pipeline.outputs import MANIFEST, as_storage, read_augment_ledger, read_ledger
from schemas import Col, Kind, NegCol, State, component_columns, metric_columns


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def item(row: dict[str, Any], metrics: list[str], components: dict[str, str] | None = None) -> dict[str, Any]:
    """One ledger row in the audit JSON shape (``components``: :func:`schemas.component_columns`)."""
    error = None
    if row[Col.STATE] == State.FAILED:
        error = f"{row[Col.ERROR_TYPE]}: {row[Col.ERROR_MESSAGE]}"
    accepted_clip = row[Col.KIND] == Kind.CLIP and row[Col.STATE] == State.ACCEPTED
    return {
        "id": row[Col.ID],
        "kind": row[Col.KIND],
        "source_id": row[Col.SOURCE_ID],
        "input": row[Col.INPUT],
        "state": row[Col.STATE],
        "stage": row[Col.STAGE],
        "reason": row[Col.REASON],
        "start_s": row.get(Col.CLIP_START_S),
        "end_s": row.get(Col.CLIP_END_S),
        "media": row.get(Col.MEDIA_PATH) if accepted_clip else None,
        "metrics": {m: _clean(row[m]) for m in metrics if row.get(m) is not None},
        "detail": row.get(Col.DETAIL),
        "error": error,
        "metric": row.get(Col.METRIC),
        "value": _clean(row.get(Col.VALUE)),
        "threshold": _clean(row.get(Col.THRESHOLD)),
        "config_hash": row.get(Col.CONFIG_HASH),
        "backend": row.get(Col.BACKEND),
        "time": updated.isoformat() if (updated := row.get(Col.UPDATED_AT)) is not None else None,
        "run_id": row.get(Col.RUN_ID),
        "thumb": row.get(Col.THUMB_PATH),
        "components": {c: _clean(row[c]) for c in components or {} if row.get(c) is not None},
    }


def _stages_of(out: str | Path) -> list[tuple[str, str]]:
    """The stages the run had, in order (from its manifest; every known stage without one)."""
    storage = as_storage(out)
    if storage.exists(MANIFEST):
        return [(f["stage"], f["unit"]) for f in storage.read_json(MANIFEST)["funnel"]]
    return [(s.name, s.unit) for s in STAGES]


def funnel_json(ledger: pa.Table, stages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    num_sources = sum(1 for k in ledger.column(Col.KIND).to_pylist() if k == Kind.SOURCE)
    return [r.to_json() for r in compute_funnel(ledger, stages, num_sources)]


def audit_json(out: str | Path, with_items: bool = False, only_id: str | None = None) -> dict[str, Any]:
    ledger = read_ledger(out)
    result: dict[str, Any] = {"funnel": funnel_json(ledger, _stages_of(out)) + _augment_funnel(out)}
    if with_items or only_id:
        metrics, components = metric_columns(ledger.schema), component_columns(ledger.schema)
        rows = ledger.to_pylist()
        if only_id:
            rows = [r for r in rows if only_id in (r[Col.ID], r[Col.SOURCE_ID])]
        result["items"] = [item(r, metrics, components) for r in rows]
    return result


def _augment_funnel(out: str | Path) -> list[dict[str, Any]]:
    """The ``javis augment`` stage, when it has run: accepted clips in, negatives built or failed."""
    storage = as_storage(out)
    if not storage.exists("negatives/manifest.json"):
        return []
    entry = storage.read_json("negatives/manifest.json")["funnel"]
    failures = read_augment_ledger(out)
    entry["reasons"] = {}
    if failures is not None:
        entry["errors"] = {
            r[NegCol.CLIP_ID]: f"{r[NegCol.ERROR_TYPE]}: {r[NegCol.ERROR_MESSAGE]}"
            for r in failures.to_pylist()
            if r[NegCol.STATE] == State.FAILED
        }
    return [entry]


def format_funnel(funnel: list[dict[str, Any]]) -> str:
    lines = [f"{'stage':<12} {'unit':<7} {'in':>7} {'passed':>7} {'rejected':>8} {'failed':>7}  reasons"]
    for f in funnel:
        reasons = ", ".join(f"{k}={v}" for k, v in f["reasons"].items())
        lines.append(
            f"{f['stage']:<12} {f['unit']:<7} {f['in']:>7} {f['passed']:>7} {f['rejected']:>8} {f['failed']:>7}  {reasons}"
        )
    return "\n".join(lines)


def _decision(entry: dict[str, Any]) -> str:
    state = entry["state"]
    if state == State.ACCEPTED:
        where = f" -> {entry['media']}" if entry["media"] else ""
        return f"accepted{where}"
    if state == State.FAILED:
        return f"FAILED at {entry['stage']}: {entry['error']} (retried on the next run)"
    return f"rejected at {entry['stage']}: {entry['reason']}"


def explain(out: str | Path, item_id: str) -> str:
    """Human-readable story of one source (with its clips) or one clip."""
    ledger = read_ledger(out)
    metrics, components = metric_columns(ledger.schema), component_columns(ledger.schema)
    rows = {r[Col.ID]: r for r in ledger.to_pylist()}
    if item_id not in rows:
        raise KeyError(f"no source or clip with id {item_id!r} in {out}")
    row = rows[item_id]
    lines = [_describe(row, item(row, metrics, components), components)]
    if row[Col.KIND] == Kind.SOURCE:
        clips = sorted((r for r in rows.values() if r[Col.SOURCE_ID] == item_id and r[Col.KIND] == Kind.CLIP),
                       key=lambda r: r[Col.CLIP_START_S])  # fmt: skip
        lines.append(f"  {len(clips)} clips:")
        lines += [
            "    " + _describe(c, item(c, metrics, components), components).replace("\n", "\n    ") for c in clips
        ]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _describe(row: dict[str, Any], entry: dict[str, Any], components: dict[str, str]) -> str:
    span = ""
    if entry["start_s"] is not None:
        span = f" [{entry['start_s']:.3f}s, {entry['end_s']:.3f}s)"
    text = f"{entry['kind']} {entry['id']}{span} from {entry['input']}\n  {_decision(entry)}"
    if row[Col.STATE] == State.REJECTED and row[Col.METRIC]:
        value, threshold = (f"{v:.6g}" if v is not None else "none" for v in (row[Col.VALUE], row[Col.THRESHOLD]))
        text += f"\n  decision: {row[Col.METRIC]} = {value}, threshold {threshold}"
        text += f" (config {row[Col.CONFIG_HASH]})"
    elif row[Col.STATE] == State.REJECTED:
        text += f"\n  decision: {row[Col.REASON]} (config {row[Col.CONFIG_HASH]}, backend {row[Col.BACKEND]})"
    if entry["detail"]:
        text += f"\n  detail: {entry['detail']}"
    if entry["metrics"]:
        text += "\n  metrics: " + ", ".join(f"{k}={_number(v)}" for k, v in entry["metrics"].items())
    explained: dict[str, list[str]] = {}
    for column, value in entry["components"].items():
        explained.setdefault(components[column], []).append(f"{column}={_number(value)}")
    for metric, parts in explained.items():
        text += f"\n  {metric} = {_number(entry['metrics'].get(metric))} from: " + ", ".join(parts)
    if entry["thumb"]:
        text += f"\n  thumbnail: {entry['thumb']}"
    if entry["run_id"]:
        text += f"\n  decided by run {entry['run_id']} at {entry['time']}"
    return text


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str)
