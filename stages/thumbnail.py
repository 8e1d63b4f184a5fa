"""Clip thumbnails: one small JPEG strip per candidate clip, so an auditor can *see* every clip,
rejected ones included, after their media is pruned.

A strip is the frames on screen at ``THUMB_POSITIONS`` of the clip (10, 50 and 90 %), upright,
``height`` pixels high, side by side. They come from the scene cut's single decode
(``stages.analysis``), each position taking the nearest still of the candidate-still grid
(``scene_cut.still_fps``) exactly as the filters' position needs do: a filter's stills when one is
at least the strip's size (three scaled down per clip), else a grid of stills scaled by libswscale
straight to the strip's size (one tiny scale per still). Nothing is decoded again; per clip, one
JPEG encode (about 1.8 ms per clip in all on 720p, see README "What comes out").
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

THUMB_POSITIONS = (0.1, 0.5, 0.9)  # as the aesthetic and OCR filters' default frames
JPEG_QUALITY = 80  # OpenCV's 0-100 scale: ~4 KB per 160 px frame, no visible blocking


def thumb_sampler_size(width: int, height: int, rotation_deg: int, thumb_height: int) -> tuple[int, int]:
    """(width, height) to scale a *stored* (unrotated) frame to, so that once turned upright by
    ``rotation_deg`` it is ``thumb_height`` high, aspect kept, width even (YUV 4:2:0)."""
    sideways = (rotation_deg // 90) % 2 == 1
    upright_w, upright_h = (height, width) if sideways else (width, height)
    thumb_w = max(2, int(round(upright_w * thumb_height / upright_h / 2)) * 2)
    return (thumb_height, thumb_w) if sideways else (thumb_w, thumb_height)


def strip_jpeg(frames: Sequence[np.ndarray], quality: int = JPEG_QUALITY) -> bytes:
    """Upright (H, W, 3) uint8 RGB frames of one size -> one JPEG of them side by side."""
    strip = cv2.cvtColor(np.hstack(list(frames)), cv2.COLOR_RGB2BGR)  # OpenCV encodes BGR
    ok, encoded = cv2.imencode(".jpg", strip, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {strip.shape} thumbnail strip")
    return encoded.tobytes()
