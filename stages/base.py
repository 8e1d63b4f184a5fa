"""The stage contract: a stage maps one pending row to an :class:`Outcome`.

A stage is a plain class with a ``name``, the ``unit`` it works on (source or clip rows), the
reason codes it may emit, and ``process(row) -> Outcome``. It loads anything heavy in
``__init__`` and never imports Ray: ``pipeline/`` decides where it runs.

:func:`apply_stage` is the only place that touches row state. It hands pending rows of the
stage's unit to the stage, passes every other row through untouched (so a row rejected
upstream is never re-examined), and turns a per-row exception into a ``failed`` record. That
is what makes the ledger complete by construction: rows are never dropped, only marked.

A stage that emits children may also offer ``stream(row)``: a generator that yields each child
row as soon as it exists and returns the row's own :class:`Outcome`. :func:`stream_stage` runs
it so that children leave before the row is finished (a source's clips while the rest of the
source is still being decoded); ``process`` then collects the same stream in one go.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import traceback
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from schemas import WORK_SCHEMA, Col, Kind, State, conform

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A final decision: ``reason`` is a snake_case code from the stage's ``reasons``."""

    reason: str
    metric: str | None = None  # column name of the score the decision was made on
    value: float | None = None
    threshold: float | None = None
    detail: str | None = None  # what exactly was wrong, for auditors


@dataclasses.dataclass
class Outcome:
    """What a stage decided about one row.

    ``columns`` are written to the row whatever the decision (raw scores are kept for rejected
    rows too). ``children`` are new rows (clips emitted by a source); they start ``pending``.
    """

    columns: dict[str, Any] = dataclasses.field(default_factory=dict)
    rejection: Rejection | None = None
    children: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def passed(**columns: Any) -> Outcome:
    return Outcome(columns=columns)


def rejected(
    reason: str,
    metric: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
    detail: str | None = None,
    **columns: Any,
) -> Outcome:
    return Outcome(columns=columns, rejection=Rejection(reason, metric, value, threshold, detail))


class Stage(Protocol):
    name: ClassVar[str]
    unit: ClassVar[str]  # Kind.SOURCE or Kind.CLIP
    reasons: ClassVar[tuple[str, ...]]
    requires: ClassVar[tuple[str, ...]]  # columns this stage reads (checked at build time)
    produces: ClassVar[tuple[str, ...]]  # columns this stage writes

    def process(self, row: dict[str, Any]) -> Outcome: ...


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _finish(row: dict[str, Any], stage: Stage, outcome: Outcome, config_hash: str) -> list[dict[str, Any]]:
    bad = set(outcome.columns) - set(stage.produces)
    if bad:
        raise AssertionError(f"stage {stage.name} wrote columns it does not declare: {sorted(bad)}")
    row.update(outcome.columns)
    if outcome.rejection is not None:
        r = outcome.rejection
        if r.reason not in stage.reasons:
            raise AssertionError(f"stage {stage.name} emitted undeclared reason {r.reason!r}")
        mark_rejected(row, stage.name, r, config_hash, getattr(stage, "backend_id", None))
    return [row, *(_child(row, child) for child in outcome.children)]


def _child(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """A new pending row emitted by ``parent``'s stage; it inherits the parent's attempt."""
    child = dict(child)
    child.setdefault(Col.STATE, State.PENDING)
    child.setdefault(Col.ATTEMPT, parent.get(Col.ATTEMPT))
    child.setdefault(Col.UPDATED_AT, now_utc())
    return child


def mark_rejected(
    row: dict[str, Any], stage_name: str, rejection: Rejection, config_hash: str | None, backend: str | None = None
) -> None:
    """Record a final ``rejected`` decision of ``stage_name`` on ``row``."""
    row.update(
        {
            Col.STATE: State.REJECTED,
            Col.STAGE: stage_name,
            Col.REASON: rejection.reason,
            Col.METRIC: rejection.metric,
            Col.VALUE: None if rejection.value is None else float(rejection.value),
            Col.THRESHOLD: None if rejection.threshold is None else float(rejection.threshold),
            Col.DETAIL: rejection.detail,
            Col.BACKEND: backend,
            Col.CONFIG_HASH: config_hash,
            Col.UPDATED_AT: now_utc(),
        }
    )


def mark_failed(row: dict[str, Any], stage_name: str, error: BaseException, config_hash: str | None) -> None:
    row.update(
        {
            Col.STATE: State.FAILED,
            Col.STAGE: stage_name,
            Col.REASON: None,
            Col.ERROR_TYPE: type(error).__name__,
            Col.ERROR_MESSAGE: (str(error) or repr(error))[:_MAX_ERROR_CHARS],
            Col.CONFIG_HASH: config_hash,
            Col.UPDATED_AT: now_utc(),
        }
    )


def _outcomes(stage: Stage, rows: list[dict[str, Any]]) -> list[Outcome | BaseException]:
    """One outcome (or the exception it raised) per pending row. A stage with a
    ``process_batch(rows) -> list[Outcome | Exception]`` (a batched model call) gets all rows at
    once; an exception raised by ``process_batch`` itself fails every row of the batch."""
    batched = getattr(stage, "process_batch", None)
    if batched is not None and rows:
        try:
            results = list(batched(rows))
        except Exception as e:  # the whole batch failed (e.g. the backend is down): each row records it
            log.warning("%s failed on a batch of %d: %s\n%s", stage.name, len(rows), e, traceback.format_exc(limit=3))
            return [e] * len(rows)
        if len(results) != len(rows):
            raise AssertionError(f"stage {stage.name} returned {len(results)} outcomes for {len(rows)} rows")
        return results
    results: list[Outcome | BaseException] = []
    for row in rows:
        try:
            results.append(stage.process(row))
        except Exception as e:  # the row boundary: one bad item must not stop the run
            log.warning("%s failed on %s: %s\n%s", stage.name, row[Col.ID], e, traceback.format_exc(limit=3))
            results.append(e)
    return results


def apply_stage(stage: Stage, batch: pa.Table, config_hash: str) -> pa.Table:
    """Run ``stage`` over the pending rows of its unit in ``batch``; keep every other row."""
    rows = batch.to_pylist()
    pending = [i for i, row in enumerate(rows) if row[Col.KIND] == stage.unit and row[Col.STATE] == State.PENDING]
    results = dict(zip(pending, _outcomes(stage, [rows[i] for i in pending])))
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        result = results.get(i)
        if result is None:
            out.append(row)
        elif isinstance(result, BaseException):
            mark_failed(row, stage.name, result, config_hash)
            out.append(row)
        else:
            out.extend(_finish(row, stage, result, config_hash))
    return conform(out, WORK_SCHEMA)


def stream_stage(stage: Any, batch: pa.Table, config_hash: str) -> Iterator[pa.Table]:
    """Run a streaming stage (one with ``stream(row)``) over ``batch``: each child row is yielded
    as a one-row table the moment the stage emits it; the row itself follows, finished. A row
    whose stream raises is ``failed`` at this stage; children it already emitted have left (the
    runner discards the clips of a source that did not pass, see ``pipeline.runner``)."""
    untouched = []
    for row in batch.to_pylist():
        if row[Col.KIND] != stage.unit or row[Col.STATE] != State.PENDING:
            untouched.append(row)
            continue
        stream = stage.stream(row)
        try:
            while True:
                yield conform([_child(row, next(stream))], WORK_SCHEMA)
        except StopIteration as done:
            outcome: Outcome = done.value
            yield conform(_finish(row, stage, outcome, config_hash), WORK_SCHEMA)
        except Exception as e:  # the row boundary, as in apply_stage
            log.warning("%s failed on %s: %s\n%s", stage.name, row[Col.ID], e, traceback.format_exc(limit=3))
            mark_failed(row, stage.name, e, config_hash)
            yield conform([row], WORK_SCHEMA)
    if untouched:
        yield conform(untouched, WORK_SCHEMA)


def source_row(**columns: Any) -> dict[str, Any]:
    """A new pending source row (used by input planning and tests)."""
    row = {Col.KIND: Kind.SOURCE, Col.STATE: State.PENDING, Col.ATTEMPT: 1, Col.UPDATED_AT: now_utc()}
    row.update(columns)
    row.setdefault(Col.SOURCE_ID, row.get(Col.ID))
    return row
