"""ocr: reject clips covered in on-screen text, from a DBNet text detector.

Input: clip rows with ``decoded`` media (frames at a few relative positions, RGB, longer side
at most ``max_side``). Only text *detection* runs (no recognition): the paper's rule counts
text regions, it does not read them.

Backends (both the DB-style detector that ships inside the ``rapidocr`` wheel, PP-OCR det,
ONNX, run with RapidOCR's own pre- and post-processing):

* ``rapidocr_det``: onnxruntime on the CPU (default, offline).
* ``rapidocr_det_cuda``: onnxruntime's CUDA execution provider (needs ``onnxruntime-gpu``);
  fails at start-up when that provider is missing.

Either can load another DBNet ONNX file from ``det_model_path``.

Output columns: ``ocr_num_regions`` (the most text boxes found in one sampled frame),
``ocr_text_area_fraction`` (the largest fraction of one frame covered by the union of the
boxes), ``ocr_backend``. Reason code: ``too_much_text`` (more regions than ``max_regions``,
the paper's 5; or, if set, a larger area fraction than ``max_text_area_fraction``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, Rejection, rejected
from stages.decode import DecodedClip, FrameNeed

BACKENDS = ("rapidocr_det", "rapidocr_det_cuda")


@dataclasses.dataclass(frozen=True)
class OcrConfig:
    enabled: bool = True
    backend: str = "rapidocr_det"  # one of BACKENDS
    positions: tuple[float, ...] = (0.1, 0.5, 0.9)  # frames checked, relative positions in the clip
    max_side: int = 960  # frames downscaled to this longer side (never upscaled: small text stays small)
    max_regions: int = 5  # more text regions than this in one frame: "too_much_text" (the paper's 5)
    max_text_area_fraction: float | None = None  # also reject above this covered fraction; None: off
    box_thresh: float = 0.5  # detector box score threshold (RapidOCR's default)
    det_model_path: str | None = None  # another DBNet ONNX file; None: the model inside the rapidocr wheel
    device_id: int = 0  # rapidocr_det_cuda: the GPU

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"ocr.backend must be one of {BACKENDS}, got {self.backend!r}")
        object.__setattr__(self, "positions", tuple(self.positions))
        if not self.positions or any(not 0.0 <= p <= 1.0 for p in self.positions):
            raise ValueError("ocr.positions must be a non-empty list of values in [0, 1]")
        if self.max_side < 64 or self.max_regions < 0 or not 0 < self.box_thresh < 1:
            raise ValueError("ocr.max_side >= 64, ocr.max_regions >= 0 and 0 < ocr.box_thresh < 1 required")
        if self.max_text_area_fraction is not None and not 0 < self.max_text_area_fraction <= 1:
            raise ValueError("ocr.max_text_area_fraction must be in (0, 1] or null")


def text_area_fraction(boxes: np.ndarray, height: int, width: int) -> float:
    """Fraction of the frame covered by the union of the box polygons (overlaps count once)."""
    if len(boxes) == 0:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    for box in boxes:  # one call per box: fillPoly with several contours XORs their overlaps
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    return float(mask.mean())


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RapidOcrTextDetector:
    """RapidOCR's text detector alone (no classifier, no recogniser) on onnxruntime."""

    name: ClassVar[str] = "rapidocr-det"

    def __init__(
        self, max_side: int, box_thresh: float, model_path: str | None, use_cuda: bool, device_id: int
    ) -> None:
        from importlib.metadata import version

        from rapidocr import RapidOCR

        if use_cuda:
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ValueError(
                    "ocr.backend=rapidocr_det_cuda needs onnxruntime's CUDAExecutionProvider "
                    "(install onnxruntime-gpu on a CUDA machine); use ocr.backend=rapidocr_det on CPU"
                )
        if model_path is not None and not Path(model_path).is_file():
            raise FileNotFoundError(f"ocr.det_model_path: no such file {model_path!r}")
        params: dict[str, Any] = {
            "Global.use_cls": False,
            "Global.use_rec": False,
            "Global.log_level": "error",
            "Det.limit_type": "max",  # RapidOCR's default ("min") upscales small frames: slow, no gain
            "Det.limit_side_len": max_side,
            "Det.box_thresh": box_thresh,
            "EngineConfig.onnxruntime.use_cuda": use_cuda,
            "EngineConfig.onnxruntime.cuda_ep_cfg.device_id": device_id,
        }
        if model_path is not None:
            params["Det.model_path"] = model_path
        self.engine = RapidOCR(params=params)
        used = Path(model_path) if model_path else _wheel_det_model()
        self.version = f"{version('rapidocr')}/{used.name}/sha256:{_file_sha256(used)[:8]}"

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Text boxes of one RGB frame, as (N, 4, 2) corner points in its pixels."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        result = self.engine(bgr, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(result, "boxes", None)
        return np.zeros((0, 4, 2), np.float32) if boxes is None else np.asarray(boxes, np.float32)


def _wheel_det_model() -> Path:
    """The detection model file the rapidocr wheel ships (the one RapidOCR loads by default)."""
    import rapidocr

    found = sorted((Path(rapidocr.__file__).parent / "models").glob("*det*.onnx"))
    if not found:
        raise FileNotFoundError("the installed rapidocr wheel has no text-detection model")
    return found[0]


def decide(config: OcrConfig, scores: Mapping[str, Any]) -> Rejection | None:
    """Pure: too many text regions (or too much text area) in any sampled frame."""
    regions = scores[Col.OCR_NUM_REGIONS]
    if regions is None:
        raise ValueError("row has no OCR scores: rescore it")
    if regions > config.max_regions:
        return Rejection("too_much_text", Col.OCR_NUM_REGIONS, float(regions), float(config.max_regions))
    area = scores[Col.OCR_TEXT_AREA_FRACTION]
    if config.max_text_area_fraction is not None and area > config.max_text_area_fraction:
        return Rejection("too_much_text", Col.OCR_TEXT_AREA_FRACTION, area, config.max_text_area_fraction)
    return None


class Ocr:
    """See the module docstring."""

    name: ClassVar[str] = "ocr"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("too_much_text",)
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED,)
    produces: ClassVar[tuple[str, ...]] = (Col.OCR_NUM_REGIONS, Col.OCR_TEXT_AREA_FRACTION, Col.OCR_BACKEND)

    def __init__(self, config: OcrConfig) -> None:
        self.config = config
        self.detector = RapidOcrTextDetector(
            config.max_side,
            config.box_thresh,
            config.det_model_path,
            config.backend == "rapidocr_det_cuda",
            config.device_id,
        )
        self.backend_id = f"{config.backend}/{self.detector.version}"

    @staticmethod
    def frame_need(config: OcrConfig) -> FrameNeed | None:
        return FrameNeed("ocr", positions=config.positions, max_side=config.max_side) if config.enabled else None

    @staticmethod
    def needs_audio(config: OcrConfig) -> bool:
        return False

    def score(self, frames: np.ndarray) -> dict[str, Any]:
        """Regions and covered fraction of the worst frame."""
        if len(frames) == 0:
            raise ValueError("no decoded frames for the ocr stage (is it in the decode stage's needs?)")
        counts, areas = [], []
        for frame in frames:
            boxes = self.detector.detect(frame)
            counts.append(len(boxes))
            areas.append(text_area_fraction(boxes, frame.shape[0], frame.shape[1]))
        return {
            Col.OCR_NUM_REGIONS: int(max(counts)),
            Col.OCR_TEXT_AREA_FRACTION: float(max(areas)),
            Col.OCR_BACKEND: self.backend_id,
        }

    def process(self, row: dict[str, Any]) -> Outcome:
        frames = DecodedClip.from_row(row).frames.get("ocr")
        if frames is None:
            raise ValueError("no decoded frames for the ocr stage (is it in the decode stage's needs?)")
        columns = self.score(frames)
        decision = decide(self.config, columns)
        if decision is None:
            return Outcome(columns=columns)
        return rejected(decision.reason, decision.metric, decision.value, decision.threshold, **columns)
