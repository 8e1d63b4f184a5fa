import json

import numpy as np

from augment import audio_ops, video_ops
from augment.context import FAMILIES, ClipContext, Interval
from augment.negatives import apply_drawn, draw_negatives, family_seed

OPS = (*video_ops.OPS, *audio_ops.OPS)


def _ctx(clip_id="c1", active=True):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (40, 48, 64, 3), dtype=np.uint8)
    audio = (0.3 * rng.standard_normal((1, 32000))).astype(np.float32)
    return ClipContext(clip_id, frames, 20.0, audio, 16000, active=[Interval(0.2, 1.6)] if active else [])


def test_one_operation_per_family_reproducibly():
    first = draw_negatives(_ctx(), OPS, seed=7)
    assert [d.family for d in first] == list(FAMILIES)
    again = draw_negatives(_ctx(), OPS, seed=7)
    assert [(d.op, d.params, d.negative_id) for d in first] == [(d.op, d.params, d.negative_id) for d in again]
    other = draw_negatives(_ctx(), OPS, seed=8)
    assert [d.params for d in other] != [d.params for d in first]
    assert family_seed(7, "c1", "x") != family_seed(7, "c2", "x")
    for drawn in first:
        if drawn.op is None:
            continue
        json.dumps(drawn.params)
        frames, audio = apply_drawn(_ctx(), drawn, OPS)
        changed_video = not np.array_equal(frames, _ctx().frames)
        assert changed_video == drawn.family.startswith("video"), drawn.op
        assert frames.shape == _ctx().frames.shape and audio.shape == _ctx().audio.shape


def test_a_family_with_no_applicable_operation_is_skipped_with_the_reasons():
    ctx = _ctx(active=False)  # no sources, donors, trajectories or source audio either
    spatial = next(d for d in draw_negatives(ctx, OPS, seed=0) if d.family == "audio_spatial")
    if spatial.op is None:
        assert "add_source" in spatial.skipped and "remove_source" in spatial.skipped
    video = next(d for d in draw_negatives(ctx, OPS, seed=0) if d.family == "video_spatial")
    assert video.op == "grid_mask"  # the trajectory overlay needs a pool
