"""ocr: reject clips covered in on-screen text, from a DBNet text detector.

Input: clip rows with ``decoded`` media (frames named ``ocr`` at a few relative positions, RGB,
longer side at most ``max_side``). Only text *detection* runs (no angle classifier, no
recogniser): the paper's rule counts text regions (DBNet), it does not read them.

The detector is the DB-style model inside the ``rapidocr`` wheel (PP-OCRv6 det "small", ONNX),
run with RapidOCR's own pre-processing (resize to multiples of 32, normalise to [-1, 1]) and DB
post-processing (probability map > 0.3, boxes whose mean probability >= ``box_thresh``, each
box grown by RapidOCR's unclip ratio 1.6). We build the onnxruntime session ourselves instead
of calling ``RapidOCR()``: the model path is explicit (RapidOCR's default path runs its
download-or-verify code), the execution provider is checked after start-up (RapidOCR falls back
to the CPU with only a log warning when CUDA does not start) and the thread count is ours.

Backends (one detector class, two execution providers):

* ``rapidocr_det``: onnxruntime on the CPU (default, offline).
* ``rapidocr_det_cuda``: onnxruntime's CUDA execution provider (needs ``onnxruntime-gpu``);
  start-up fails when that provider is missing or does not start.

Either loads another DBNet ONNX file from ``det_model_path``.

Output columns: ``ocr_num_regions`` (the most text boxes in one sampled frame),
``ocr_text_area_fraction`` (the largest fraction of one frame covered by the union of its box
polygons), ``ocr_backend``. Reason code: ``too_much_text`` (more regions than ``max_regions``,
the paper's 5; or, if set, a larger area fraction than ``max_text_area_fraction``).
Known quirk (docs/filters/ocr.md): the model sometimes reports one frame-sized box on smooth
colour fields or dense foliage; it adds one region, so the count rule holds, but it makes the
area fraction unreliable, which is why the area rule is off by default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, Rejection, passed, rejected
from stages.decode import DecodedClip, FrameNeed

# backend name -> onnxruntime execution provider
BACKENDS = {"rapidocr_det": "CPUExecutionProvider", "rapidocr_det_cuda": "CUDAExecutionProvider"}
WHEEL_DET_MODEL = "PP-OCRv6_det_small.onnx"  # the detector RapidOCR 3.10 loads by default (calibrated)


@dataclasses.dataclass(frozen=True)
class OcrConfig:
    enabled: bool = True  # false: the stage is left out of the pipeline
    backend: str = "rapidocr_det"  # one of BACKENDS
    positions: tuple[float, ...] = (0.1, 0.5, 0.9)  # frames checked, relative positions in the clip
    max_side: int = 960  # frames downscaled to this longer side (never upscaled: small text stays small)
    max_regions: int = 5  # more text regions than this in one frame: "too_much_text" (the paper's 5)
    max_text_area_fraction: float | None = None  # also reject above this covered fraction; None: off
    box_thresh: float = 0.5  # DB box score threshold: mean text probability inside a box (RapidOCR's default)
    det_model_path: str | None = None  # another DBNet ONNX file; None: the model inside the rapidocr wheel
    device: str = "cuda"  # rapidocr_det_cuda: "cuda" or "cuda:N" (ignored by rapidocr_det)
    num_threads: int = 0  # onnxruntime intra-op threads; 0: onnxruntime's default (all cores)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"ocr.backend must be one of {tuple(BACKENDS)}, got {self.backend!r}")
        # ascending: the shared decode assigns frames in one forward pass, in the order given
        object.__setattr__(self, "positions", tuple(sorted(self.positions)))
        if not self.positions or any(not 0.0 <= p <= 1.0 for p in self.positions):
            raise ValueError("ocr.positions must be a non-empty list of values in [0, 1]")
        if self.max_side < 64:
            raise ValueError("ocr.max_side must be >= 64")
        if self.max_regions < 0:
            raise ValueError("ocr.max_regions must be >= 0")
        if not 0 < self.box_thresh < 1:
            raise ValueError("ocr.box_thresh must be in (0, 1)")
        if self.max_text_area_fraction is not None and not 0 < self.max_text_area_fraction <= 1:
            raise ValueError("ocr.max_text_area_fraction must be in (0, 1] or null")
        if not re.fullmatch(r"cuda(:\d+)?", self.device):
            raise ValueError(f"ocr.device must be 'cuda' or 'cuda:N', got {self.device!r}")
        if self.num_threads < 0:
            raise ValueError("ocr.num_threads must be >= 0")


def text_area_fraction(boxes: np.ndarray, height: int, width: int) -> float:
    """Fraction of the frame covered by the union of the box polygons (overlaps count once)."""
    if len(boxes) == 0:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    for box in boxes:  # one call per box: fillPoly with several contours XORs their overlaps
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    return float(mask.mean())


def clip_scores(boxes_per_frame: list[np.ndarray], frame_shape: tuple[int, int]) -> tuple[int, float]:
    """(most boxes in one frame, largest covered fraction of one frame): the worst frame decides,
    because text shown for a third of a clip already makes it unusable."""
    height, width = frame_shape
    counts = [len(boxes) for boxes in boxes_per_frame]
    areas = [text_area_fraction(boxes, height, width) for boxes in boxes_per_frame]
    return int(max(counts)), float(max(areas))


def decide(config: OcrConfig, scores: Mapping[str, Any]) -> Rejection | None:
    """The decision from stored score columns (a row) and the config's thresholds. Pure: used by
    ``Ocr.process`` and by ``javis refilter`` to re-threshold without decoding."""
    regions = scores.get(Col.OCR_NUM_REGIONS)
    if regions is None:
        raise ValueError(f"row has no {Col.OCR_NUM_REGIONS} score: the ocr stage never scored it")
    if regions > config.max_regions:
        detail = f"{regions} text regions in one frame > {config.max_regions}"
        return Rejection("too_much_text", Col.OCR_NUM_REGIONS, float(regions), float(config.max_regions), detail)
    area = scores.get(Col.OCR_TEXT_AREA_FRACTION)
    limit = config.max_text_area_fraction
    if limit is not None and area is not None and area > limit:
        detail = f"text covers {area:.3f} of a frame > {limit:g}"
        return Rejection("too_much_text", Col.OCR_TEXT_AREA_FRACTION, float(area), limit, detail)
    return None


def wheel_det_model() -> Path:
    """The detection model file inside the installed rapidocr wheel."""
    import rapidocr

    models = Path(rapidocr.__file__).parent / "models"
    if (models / WHEEL_DET_MODEL).is_file():
        return models / WHEEL_DET_MODEL
    found = sorted(models.glob("*det*.onnx"))  # another rapidocr 3.x ships another file name
    if not found:
        raise FileNotFoundError(
            f"the installed rapidocr has no text-detection model in {models}: set ocr.det_model_path"
        )
    return found[0]


def _rapidocr_det_defaults() -> dict[str, Any]:
    """RapidOCR's own detector settings (its config.yaml), so we post-process exactly as it does."""
    import rapidocr
    import yaml

    with open(Path(rapidocr.__file__).parent / "config.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)["Det"]


def _onnx_session(model_path: Path, provider: str, device_id: int, num_threads: int) -> Any:
    """An onnxruntime session on exactly ``provider``; ValueError when it cannot run there."""
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        raise ValueError(
            f"ocr.backend=rapidocr_det_cuda needs onnxruntime's {provider}, which this onnxruntime "
            f"({onnxruntime.__version__}, {onnxruntime.get_available_providers()}) lacks: install "
            "onnxruntime-gpu on a CUDA machine, or use ocr.backend=rapidocr_det"
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    # idle intra-op threads sleep instead of spinning: the other stages share these cores, and a
    # spinning pool burned a fifth of a run's CPU waiting for work (bench/bench_run.py)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if num_threads:
        options.intra_op_num_threads = num_threads
    providers = [(provider, {"device_id": device_id})] if provider == "CUDAExecutionProvider" else [provider]
    try:
        session = onnxruntime.InferenceSession(str(model_path), options, providers=providers)
    except Exception as e:  # a corrupt or foreign file, a bad device: name the config keys
        raise ValueError(
            f"ocr: onnxruntime cannot load {model_path} on {provider} (ocr.det_model_path, ocr.device): {e}"
        ) from e
    if session.get_providers()[0] != provider:  # onnxruntime falls back to the CPU silently
        raise ValueError(f"ocr: {provider} did not start (CUDA/cuDNN libraries?); got {session.get_providers()}")
    return session


class DBNetOnnxDetector:
    """A DBNet text detector (ONNX file) with RapidOCR's pre- and post-processing.
    Input: one RGB (or grey) uint8 frame; output: (N, 4, 2) box corners in its pixels."""

    name: ClassVar[str] = "dbnet-onnx"

    def __init__(
        self,
        model_path: Path,
        provider: str,
        box_thresh: float,
        max_side: int,
        device_id: int = 0,
        num_threads: int = 0,
    ) -> None:
        from importlib.metadata import version

        from rapidocr.ch_ppocr_det.utils import DBPostProcess, DetPreProcess

        self.session = _onnx_session(model_path, provider, device_id, num_threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs[0].shape) != 4:
            raise ValueError(f"ocr.det_model_path: {model_path} is not a DBNet detector (NCHW in, NCHW map out)")
        self.input_name = inputs[0].name
        cfg = _rapidocr_det_defaults()
        # "max": frames are never enlarged (RapidOCR's "min" 736 would upscale a 960x540 frame 1.4x)
        self.preprocess = DetPreProcess(max_side, "max", cfg["mean"], cfg["std"])
        self.postprocess = DBPostProcess(
            thresh=cfg["thresh"],
            box_thresh=box_thresh,
            max_candidates=cfg["max_candidates"],
            unclip_ratio=cfg["unclip_ratio"],
            score_mode=cfg["score_mode"],
            use_dilation=cfg["use_dilation"],
        )
        sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
        self.version = f"{version('rapidocr')}/{model_path.name}/sha256:{sha[:8]}"

    def detect(self, frame: np.ndarray) -> np.ndarray:
        bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else np.ascontiguousarray(frame[..., ::-1])
        batch = self.preprocess(bgr)  # (1, 3, H', W') float32, H' and W' multiples of 32
        if batch is None:
            return np.zeros((0, 4, 2), np.float32)
        probability = self.session.run(None, {self.input_name: batch})[0]  # (1, 1, H', W')
        boxes, _ = self.postprocess(probability, bgr.shape[:2])
        return np.asarray(boxes, np.float32).reshape(-1, 4, 2)


class Ocr:
    """See the module docstring. Input: ``decoded`` (frames named ``ocr``); output:
    ``ocr_num_regions``, ``ocr_text_area_fraction``, ``ocr_backend``; reason: ``too_much_text``."""

    name: ClassVar[str] = "ocr"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("too_much_text",)
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED,)
    produces: ClassVar[tuple[str, ...]] = (Col.OCR_NUM_REGIONS, Col.OCR_TEXT_AREA_FRACTION, Col.OCR_BACKEND)

    def __init__(self, config: OcrConfig) -> None:
        self.config = config
        if config.det_model_path is None:
            model_path = wheel_det_model()
        elif not Path(config.det_model_path).is_file():
            raise FileNotFoundError(f"ocr.det_model_path: no such file {config.det_model_path!r}")
        else:
            model_path = Path(config.det_model_path)
        device_id = int(config.device.partition(":")[2] or 0)
        self.detector = DBNetOnnxDetector(
            model_path, BACKENDS[config.backend], config.box_thresh, config.max_side, device_id, config.num_threads
        )
        self.backend_id = f"{config.backend}/{self.detector.version}"

    @staticmethod
    def frame_need(config: OcrConfig) -> FrameNeed | None:
        return FrameNeed("ocr", positions=config.positions, max_side=config.max_side) if config.enabled else None

    @staticmethod
    def needs_audio(config: OcrConfig) -> bool:
        return False

    def score(self, frames: np.ndarray) -> dict[str, Any]:
        """Score columns of a clip's sampled frames, (N, H, W, 3) RGB."""
        if len(frames) == 0:
            raise ValueError("the analysis pack has no 'ocr' frames: scene_cut's pack plan lacks Ocr.frame_need")
        num_regions, area = clip_scores([self.detector.detect(f) for f in frames], frames.shape[1:3])
        return {Col.OCR_NUM_REGIONS: num_regions, Col.OCR_TEXT_AREA_FRACTION: area, Col.OCR_BACKEND: self.backend_id}

    def process(self, row: dict[str, Any]) -> Outcome:
        frames = DecodedClip.from_row(row).frames.get("ocr")
        if frames is None:
            raise ValueError("the analysis pack has no 'ocr' frames: scene_cut's pack plan lacks Ocr.frame_need")
        columns = self.score(frames)
        decision = decide(self.config, columns)
        if decision is None:
            return passed(**columns)
        return rejected(
            decision.reason, decision.metric, decision.value, decision.threshold, decision.detail, **columns
        )
