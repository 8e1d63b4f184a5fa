"""The per-stage funnel and the ledger invariant.

For every stage: ``in = passed + rejected + failed``. ``in`` is derived independently of the
stage's own counts: for the first stage of a unit it is the number of sources planned (or the
number of clips the scene cut said it emitted), for later stages it is what the previous stage
passed. A lost row, a duplicated row or a row marked at a stage it never reached breaks the
equation, and :func:`check_invariant` raises.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pyarrow as pa

from schemas import Col, Kind, State


@dataclasses.dataclass(frozen=True)
class FunnelRow:
    stage: str
    unit: str
    in_: int
    passed: int
    rejected: int
    failed: int
    reasons: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "unit": self.unit,
            "in": self.in_,
            "passed": self.passed,
            "rejected": self.rejected,
            "failed": self.failed,
            "reasons": dict(sorted(self.reasons.items())),
        }


class InvariantError(AssertionError):
    """The ledger does not account for every input exactly once."""


def compute_funnel(ledger: pa.Table, stages: list[tuple[str, str]], num_planned_sources: int) -> list[FunnelRow]:
    """``stages`` is ``[(name, unit), ...]`` in pipeline order."""
    rows = ledger.select([Col.KIND, Col.STATE, Col.STAGE, Col.REASON, Col.SCENE_NUM_CLIPS]).to_pylist()
    order = {name: i for i, (name, _) in enumerate(stages)}
    funnel: list[FunnelRow] = []
    previous_passed: dict[str, int] = {}
    for index, (name, unit) in enumerate(stages):
        unit_rows = [r for r in rows if r[Col.KIND] == unit]
        ended_here = [r for r in unit_rows if r[Col.STATE] in (State.REJECTED, State.FAILED) and r[Col.STAGE] == name]
        passed = sum(
            1
            for r in unit_rows
            if r[Col.STATE] == State.ACCEPTED
            or (r[Col.STATE] in (State.REJECTED, State.FAILED) and order.get(r[Col.STAGE], -1) > index)
        )
        if unit in previous_passed:
            in_ = previous_passed[unit]
        elif unit == Kind.SOURCE:
            in_ = num_planned_sources
        else:  # first clip stage: what the segmenting stage said it emitted
            in_ = sum(
                r[Col.SCENE_NUM_CLIPS] or 0
                for r in rows
                if r[Col.KIND] == Kind.SOURCE and r[Col.STATE] == State.ACCEPTED
            )
        previous_passed[unit] = passed
        funnel.append(
            FunnelRow(
                stage=name,
                unit=unit,
                in_=in_,
                passed=passed,
                rejected=sum(1 for r in ended_here if r[Col.STATE] == State.REJECTED),
                failed=sum(1 for r in ended_here if r[Col.STATE] == State.FAILED),
                reasons=dict(Counter(r[Col.REASON] for r in ended_here if r[Col.STATE] == State.REJECTED)),
            )
        )
    return funnel


def check_invariant(ledger: pa.Table, funnel: list[FunnelRow], planned_source_ids: set[str] | None = None) -> None:
    """Raise :class:`InvariantError` unless every input is in exactly one terminal state."""
    problems = []
    ids = ledger.column(Col.ID).to_pylist()
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        problems.append(f"{len(dupes)} ids appear more than once, e.g. {dupes[:3]}")
    states = Counter(ledger.column(Col.STATE).to_pylist())
    not_terminal = {s: n for s, n in states.items() if s not in State.TERMINAL}
    if not_terminal:
        problems.append(f"rows without a terminal state: {not_terminal}")
    if planned_source_ids is not None:
        kinds = ledger.column(Col.KIND).to_pylist()
        have = {i for i, k in zip(ids, kinds) if k == Kind.SOURCE}
        missing = planned_source_ids - have
        if missing:
            problems.append(f"{len(missing)} planned sources missing from the ledger, e.g. {sorted(missing)[:3]}")
    for row in funnel:
        if row.in_ != row.passed + row.rejected + row.failed:
            problems.append(
                f"stage {row.stage}: in={row.in_} != passed {row.passed} + rejected {row.rejected} "
                f"+ failed {row.failed}"
            )
    if problems:
        raise InvariantError("ledger invariant broken:\n  " + "\n  ".join(problems))


def count_states(rows: pa.Table) -> dict[str, dict[str, int]]:
    """``{kind: {state: number of rows}}`` (manifest ``counts``)."""
    counts: dict[str, dict[str, int]] = {Kind.SOURCE: {}, Kind.CLIP: {}}
    for kind, state in zip(rows.column(Col.KIND).to_pylist(), rows.column(Col.STATE).to_pylist()):
        counts[kind][state] = counts[kind].get(state, 0) + 1
    return counts
