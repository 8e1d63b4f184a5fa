from typing import ClassVar

import pytest

from schemas import Col, Kind, conform
from stages.base import apply_stage, passed, rejected, source_row


class _Halver:
    """A toy stage: rejects odd sizes, fails on negative ones, emits a child for size 4."""

    name: ClassVar[str] = "halver"
    unit: ClassVar[str] = Kind.SOURCE
    reasons: ClassVar[tuple[str, ...]] = ("odd",)
    requires: ClassVar[tuple[str, ...]] = (Col.SRC_SIZE_BYTES,)
    produces: ClassVar[tuple[str, ...]] = (Col.SRC_DURATION_S,)

    def process(self, row):
        size = row[Col.SRC_SIZE_BYTES]
        if size < 0:
            raise OSError("negative size")
        if size % 2:
            return rejected("odd", metric=Col.SRC_SIZE_BYTES, value=size, threshold=0, src_duration_s=0.5)
        out = passed(src_duration_s=size / 2)
        if size == 4:
            out.children = [{Col.ID: "child", Col.KIND: Kind.CLIP, Col.SOURCE_ID: row[Col.ID]}]
        return out


def test_apply_stage_marks_rows_and_never_drops_any():
    rows = [source_row(id=f"s{i}", input=str(i), src_size_bytes=size) for i, size in enumerate([2, 3, -1, 4])]
    rows.append({**source_row(id="s9", input="9", src_size_bytes=3), Col.STATE: "rejected", Col.STAGE: "earlier"})
    out = {r[Col.ID]: r for r in apply_stage(_Halver(), conform(rows), "h1").to_pylist()}
    assert out["s0"][Col.STATE] == "pending" and out["s0"][Col.SRC_DURATION_S] == 1.0
    assert (out["s1"][Col.STATE], out["s1"][Col.REASON], out["s1"][Col.CONFIG_HASH]) == ("rejected", "odd", "h1")
    assert out["s1"][Col.SRC_DURATION_S] == 0.5  # scores are kept on rejected rows
    assert (out["s2"][Col.STATE], out["s2"][Col.ERROR_TYPE], out["s2"][Col.STAGE]) == ("failed", "OSError", "halver")
    assert out["s9"][Col.STAGE] == "earlier"  # rows decided upstream pass untouched
    assert out["child"][Col.STATE] == "pending" and out["child"][Col.SOURCE_ID] == "s3"
    assert len(out) == 6


def test_undeclared_columns_and_reasons_are_bugs():
    class Sloppy(_Halver):
        def process(self, row):
            return passed(src_title="not mine")

    with pytest.raises(AssertionError, match="does not declare"):
        apply_stage(Sloppy(), conform([source_row(id="s", input="x", src_size_bytes=2)]), "h")


class _BatchHalver(_Halver):
    """The same decisions through ``process_batch``: one call sees every pending row."""

    def __init__(self, down: bool = False):
        self.calls: list[list[str]] = []
        self.down = down

    def process(self, row):  # never used when process_batch exists
        raise AssertionError("process called on a batched stage")

    def process_batch(self, rows):
        self.calls.append([r[Col.ID] for r in rows])
        if self.down:
            raise TimeoutError("backend timed out")
        out = []
        for row in rows:
            try:
                out.append(_Halver.process(self, row))
            except OSError as e:
                out.append(e)
        return out


def test_batched_stage_sees_pending_rows_once_and_keeps_order():
    rows = [source_row(id=f"s{i}", input=str(i), src_size_bytes=size) for i, size in enumerate([2, 3, -1])]
    rows.insert(1, {**source_row(id="done", input="d", src_size_bytes=3), Col.STATE: "rejected", Col.STAGE: "x"})
    stage = _BatchHalver()
    out = apply_stage(stage, conform(rows), "h").to_pylist()
    assert stage.calls == [["s0", "s1", "s2"]]
    assert [r[Col.ID] for r in out] == ["s0", "done", "s1", "s2"]
    assert [r[Col.STATE] for r in out] == ["pending", "rejected", "rejected", "failed"]


def test_a_batch_that_raises_fails_every_pending_row_and_drops_none():
    rows = [source_row(id=f"s{i}", input=str(i), src_size_bytes=2) for i in range(3)]
    out = apply_stage(_BatchHalver(down=True), conform(rows), "h").to_pylist()
    assert [(r[Col.STATE], r[Col.ERROR_TYPE]) for r in out] == [("failed", "TimeoutError")] * 3


class _Streamer:
    """A toy streaming stage: emits one child per unit of size, then fails on size 3."""

    name: ClassVar[str] = "streamer"
    unit: ClassVar[str] = Kind.SOURCE
    reasons: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = (Col.SRC_SIZE_BYTES,)
    produces: ClassVar[tuple[str, ...]] = (Col.SCENE_NUM_CLIPS,)

    def stream(self, row):
        for k in range(row[Col.SRC_SIZE_BYTES]):
            if k == 2:
                raise OSError("the decoder gave up")
            yield {Col.ID: f"{row[Col.ID]}c{k}", Col.KIND: Kind.CLIP, Col.SOURCE_ID: row[Col.ID]}
        return passed(scene_num_clips=row[Col.SRC_SIZE_BYTES])


def test_streaming_stage_emits_children_before_their_parent_and_fails_at_the_row_boundary():
    from pipeline.staging import without_orphan_clips
    from stages.base import stream_stage

    rows = [source_row(id=f"s{i}", input=str(i), src_size_bytes=size) for i, size in enumerate([2, 3])]
    rows.append({**source_row(id="s9", input="9", src_size_bytes=3), Col.STATE: "rejected", Col.STAGE: "earlier"})
    tables = list(stream_stage(_Streamer(), conform(rows), "h1"))
    order = [t.column(Col.ID).to_pylist() for t in tables]
    assert order == [["s0c0"], ["s0c1"], ["s0"], ["s1c0"], ["s1c1"], ["s1"], ["s9"]]  # each child as it exists
    out = {r[Col.ID]: r for t in tables for r in t.to_pylist()}
    assert out["s0"][Col.STATE] == "pending" and out["s0"][Col.SCENE_NUM_CLIPS] == 2
    assert out["s0c1"][Col.STATE] == "pending" and out["s0c1"][Col.ATTEMPT] == 1
    assert (out["s1"][Col.STATE], out["s1"][Col.ERROR_TYPE]) == ("failed", "OSError")
    # the children s1 emitted before it failed are orphans: the runner drops them with their source
    for row in out.values():
        if row[Col.STATE] == "pending":
            row[Col.STATE] = "accepted"
    kept = without_orphan_clips(conform(list(out.values()))).column(Col.ID).to_pylist()
    assert sorted(kept) == ["s0", "s0c0", "s0c1", "s1", "s9"]
