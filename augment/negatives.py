"""Draw and build the hard negatives of one clip: one operation per family, reproducibly.

For each family the operations are tried in an order drawn from a generator seeded by
``(seed, clip_id, family)``; the first whose ``draw`` succeeds is used (an operation raises
``MissingInput`` when the clip lacks what it needs, e.g. no active sound interval). Video
operations replace the frames and keep the audio; audio operations do the reverse. So the same
seed and clip always give the same operations, parameters and bytes.

Easy negatives (audio generated from the caption alone) go through :class:`TextToAudio`
(``augment/easy.py``, the ``easy`` family); they are built only when ``augment.easy`` is enabled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from augment.context import FAMILIES, VIDEO_SPATIAL, VIDEO_TEMPORAL, ClipContext, MissingInput, OpSpec

VIDEO_FAMILIES = (VIDEO_SPATIAL, VIDEO_TEMPORAL)


def family_seed(seed: int, clip_id: str, family: str) -> int:
    """A 64-bit seed that depends only on the run seed, the clip and the family."""
    digest = hashlib.sha256(f"{seed}:{clip_id}:{family}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclasses.dataclass
class Drawn:
    """The operation chosen for one family and its parameters (or why none could be drawn)."""

    family: str
    op: str | None
    params: dict[str, Any] | None
    seed: int
    skipped: str | None = None  # why no operation of the family applies to this clip

    @property
    def negative_id(self) -> str:
        text = json.dumps([self.family, self.op, self.params, self.seed], sort_keys=True)
        return "n" + hashlib.sha256(text.encode()).hexdigest()[:16]


def draw_family(ctx: ClipContext, family: str, ops: Sequence[OpSpec], seed: int) -> Drawn:
    candidates = [op for op in ops if op.family == family]
    fseed = family_seed(seed, ctx.clip_id, family)
    rng = np.random.default_rng(fseed)
    reasons = []
    for index in rng.permutation(len(candidates)):
        op = candidates[int(index)]
        try:
            params = op.draw(ctx, rng)
        except MissingInput as e:
            reasons.append(f"{op.name}: {e}")
            continue
        json.dumps(params)  # parameters must be recordable; a bug if not
        return Drawn(family, op.name, params, fseed)
    return Drawn(family, None, None, fseed, skipped="; ".join(reasons) or "no operation in this family")


def apply_drawn(ctx: ClipContext, drawn: Drawn, ops: Sequence[OpSpec]) -> tuple[np.ndarray, np.ndarray]:
    """(frames, audio) of the negative: the family's operation replaces one of the two."""
    op = next(o for o in ops if o.name == drawn.op)
    out = op.apply(ctx, drawn.params)
    if drawn.family in VIDEO_FAMILIES:
        if out.shape != ctx.frames.shape or out.dtype != np.uint8:
            raise AssertionError(f"{op.name} changed the frames' shape or type: {out.shape} {out.dtype}")
        return out, ctx.audio
    if out.shape != ctx.audio.shape or out.dtype != np.float32:
        raise AssertionError(f"{op.name} changed the audio's shape or type: {out.shape} {out.dtype}")
    return ctx.frames, out


def draw_negatives(
    ctx: ClipContext, ops: Sequence[OpSpec], seed: int, families: Sequence[str] = FAMILIES
) -> list[Drawn]:
    """One drawn operation (or a skip) per family."""
    return [draw_family(ctx, family, ops, seed) for family in families]


class TextToAudio(Protocol):
    """Production interface for easy negatives: audio generated from the caption alone."""

    name: str
    version: str  # library, model and weights hash, recorded with every negative
    model_sha256: str
    rate_hz: int  # of the audio ``generate`` returns

    def generate(self, caption: str, duration_s: float, seed: int) -> np.ndarray:  # float32 mono (S,)
        ...
