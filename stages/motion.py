"""motion: reject static clips by their dense optical flow (the paper: flow score < 0.1 removed).

Input: the shared decode (``decoded``), frames sampled every ``1 / sample_fps`` seconds. Flow is
computed between consecutive sampled frames. Pairs whose timestamps are equal (one source frame
picked twice, because the source has fewer frames per second than we sample) carry no
information and are skipped.

**Normalisation.** A pixel's flow magnitude ``|f|`` (pixels of the frame the backend saw) is
divided by that frame's diagonal ``D = sqrt(W^2 + H^2)`` (same pixels) and by the time ``dt``
between the two frames, taken from their presentation timestamps::

    m = |f| / D / dt        [frame diagonals per second]

Displacement and diagonal scale together, so the resolution cancels; displacement grows with
``dt``, so the sampling rate cancels, and variable-frame-rate sources are handled because ``dt``
is measured, not assumed. A camera pan crossing the whole frame width of a 16:9 frame in 4 s
scores about 0.87 / 4 = 0.22.

Output columns: ``motion_flow_mean`` (the mean of ``m`` over all pixels of each pair, averaged
over pairs), ``motion_moving_fraction`` (the fraction of pixels with ``m > moving_min_flow``,
averaged over pairs), ``motion_backend``. Reason code: ``static`` (``motion_flow_mean <
min_flow``). With fewer than two distinct sampled frames (a clip shorter than one sampling
period, or a still-image stream) no motion can be measured: both scores are 0 and the clip is
rejected ``static`` with a detail saying why. We do not raise: a raise would mark the clip
``failed`` and retry it on every run, yet as far as the data can tell it is static.

Backends: ``opencv_dis`` (default, CPU: OpenCV's DIS flow), ``opencv_farneback`` (CPU: OpenCV's
Farneback flow) and ``unimatch`` (production: UniMatch / GMFlow weights from a local checkout).
Calibration and costs: ``docs/filters/motion.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import math
import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, Rejection, passed
from stages.decode import DecodedClip, FrameNeed

BACKENDS = ("opencv_dis", "opencv_farneback", "unimatch")
DIS_PRESETS = ("ultrafast", "fast", "medium")

# UniMatch's published flow model (gmflow-scale2-regrefine6-*) and its inference settings,
# from the repo's scripts/gmflow_demo.sh and Open-Sora's flow scoring
UNIMATCH_MODEL_KWARGS: dict[str, Any] = dict(
    feature_channels=128,
    num_scales=2,
    upsample_factor=4,
    num_head=1,
    ffn_dim_expansion=4,
    num_transformer_layers=6,
    reg_refine=True,
    task="flow",
)
UNIMATCH_INFERENCE_KWARGS: dict[str, Any] = dict(
    attn_type="swin",
    attn_splits_list=[2, 8],
    corr_radius_list=[-1, 4],
    prop_radius_list=[-1, 1],
    num_reg_refine=6,
    task="flow",
)
UNIMATCH_PADDING_FACTOR = 32  # input sides must be multiples of this (two scales, swin splits)


@dataclasses.dataclass(frozen=True)
class MotionConfig:
    """The ``motion`` config section. Flow units: frame diagonals per second (module docstring)."""

    enabled: bool = True  # false: the stage is left out of the pipeline
    backend: str = "opencv_dis"  # one of BACKENDS; "unimatch" is the production (GPU) backend
    dis_preset: str = "medium"  # opencv_dis: one of DIS_PRESETS (medium: see docs/filters/motion.md)
    sample_fps: float = 4.0  # frames sampled per second of clip; flow between consecutive samples
    max_side: int = 256  # OpenCV backends: frames downscaled so the longer side is at most this
    unimatch_max_side: int = 576  # unimatch: its training width (320x576); smaller sides are not upscaled
    min_flow: float = 0.003  # frame diagonals / s: a lower motion_flow_mean is "static" (calibration: docs)
    moving_min_flow: float = 0.01  # frame diagonals / s: a faster pixel is "moving" (crosses the diagonal in < 100 s)
    unimatch_repo: str | None = None  # local checkout of github.com/autonomousvision/unimatch
    unimatch_weights: str | None = None  # e.g. gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth
    unimatch_batch_pairs: int = 8  # unimatch: frame pairs per forward pass
    device: str = "cuda"  # unimatch: torch device

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"motion.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dis_preset not in DIS_PRESETS:
            raise ValueError(f"motion.dis_preset must be one of {DIS_PRESETS}, got {self.dis_preset!r}")
        if not 0 < self.sample_fps <= 60:
            raise ValueError("motion.sample_fps must be in (0, 60]")
        if self.max_side < 32 or self.unimatch_max_side < 64:
            raise ValueError("motion.max_side must be >= 32 and motion.unimatch_max_side >= 64")
        if not 0 <= self.min_flow < 10:
            raise ValueError("motion.min_flow must be in [0, 10) frame diagonals per second")
        if not 0 <= self.moving_min_flow < 10:
            raise ValueError("motion.moving_min_flow must be in [0, 10) frame diagonals per second")
        if self.unimatch_batch_pairs < 1:
            raise ValueError("motion.unimatch_batch_pairs must be >= 1")
        if self.backend == "unimatch":
            for key in ("unimatch_repo", "unimatch_weights"):
                if not getattr(self, key):
                    raise ValueError(f"motion.{key} must be set when motion.backend is 'unimatch'")


# --- the maths: pure functions on numpy arrays ---------------------------------------------------


def distinct_pairs(times_s: np.ndarray) -> np.ndarray:
    """Indices ``i`` of consecutive pairs (i, i+1) whose frames are distinct (later timestamp)."""
    times_s = np.asarray(times_s, dtype=np.float64)
    return np.flatnonzero(np.diff(times_s) > 0) if times_s.size >= 2 else np.zeros(0, dtype=np.int64)


def normalised_magnitude(magnitude_px: np.ndarray, dt_s: float) -> np.ndarray:
    """Flow magnitude (H, W) in pixels -> frame diagonals per second (see the module docstring)."""
    height, width = magnitude_px.shape[-2:]
    return magnitude_px / (math.hypot(width, height) * dt_s)


def pair_scores(magnitude_px: np.ndarray, dt_s: float, moving_min_flow: float) -> tuple[float, float]:
    """(mean normalised magnitude, fraction of pixels above ``moving_min_flow``) of one pair."""
    normalised = normalised_magnitude(magnitude_px, dt_s)
    return float(normalised.mean()), float((normalised > moving_min_flow).mean())


# --- backends: flow magnitudes in pixels for a batch of frame pairs ------------------------------


class FlowBackend(Protocol):
    """What the stage needs from a flow backend; the normalisation is the stage's, not the backend's."""

    backend_id: str  # name/version, stored in motion_backend
    batch_pairs: int  # how many pairs one call should get

    def flow_magnitudes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """(P, H, W[, 3]) uint8 frames -> (P, H, W) flow magnitudes in pixels, first -> second."""
        ...


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class DISFlow:
    """OpenCV's DIS optical flow (Kroeger et al., ECCV 2016) on grey frames: coarse-to-fine
    inverse-search patch matching with variational refinement. No weights."""

    batch_pairs = 16

    def __init__(self, preset: str = "medium") -> None:
        import cv2

        codes = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        self._dis = cv2.DISOpticalFlow_create(codes[preset])
        self.backend_id = f"opencv-dis-{preset}/{cv2.__version__}"

    def flow_magnitudes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        flows = [self._dis.calc(_gray(a), _gray(b), None) for a, b in zip(first, second)]
        return np.stack([np.hypot(f[..., 0], f[..., 1]) for f in flows])


class FarnebackFlow:
    """OpenCV's Farneback flow (polynomial expansion, SCIA 2003) on grey frames. No weights.
    Parameters are OpenCV's tutorial values with one more pyramid level for large motions."""

    batch_pairs = 16

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        self.backend_id = f"opencv-farneback/{cv2.__version__}"

    def flow_magnitudes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        calc = self._cv2.calcOpticalFlowFarneback
        flows = [calc(_gray(a), _gray(b), None, 0.5, 4, 15, 3, 5, 1.2, 0) for a, b in zip(first, second)]
        return np.stack([np.hypot(f[..., 0], f[..., 1]) for f in flows])


class UniMatchFlow:
    """UniMatch (GMFlow) flow from a ready torch module with UniMatch's forward signature
    (``model(img0, img1, **UNIMATCH_INFERENCE_KWARGS) -> {"flow_preds": [(B, 2, H, W), ...]}``).

    Inputs are RGB 0-255 float tensors (B, 3, H, W), as in the repo's demo: portrait frames are
    transposed (the model was trained on landscape crops) and both frames are resized up to
    multiples of 32 (the demo's ``padding_factor``); the flow is resized back and rescaled to the
    frame's own pixels, so the stage's normalisation applies unchanged.
    """

    def __init__(self, model: Any, device: str, weights_id: str = "unweighted", batch_pairs: int = 8) -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"motion.device={device!r} but torch sees no CUDA device")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_pairs = batch_pairs
        self.backend_id = f"unimatch/{weights_id}"

    def _tensor(self, frames: np.ndarray) -> Any:
        import torch

        images = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        if images.ndim == 3:  # grey: repeat to three channels, as the demo does
            images = images[..., None].expand(*images.shape, 3)
        return images.permute(0, 3, 1, 2).float()  # (P, 3, H, W), 0-255

    def flow_magnitudes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        image0, image1 = self._tensor(first), self._tensor(second)
        transposed = image0.shape[-2] > image0.shape[-1]
        if transposed:
            image0, image1 = image0.transpose(-2, -1), image1.transpose(-2, -1)
        size = tuple(image0.shape[-2:])
        padded = tuple(math.ceil(s / UNIMATCH_PADDING_FACTOR) * UNIMATCH_PADDING_FACTOR for s in size)
        with torch.no_grad():
            if padded != size:
                image0 = F.interpolate(image0, size=padded, mode="bilinear", align_corners=True)
                image1 = F.interpolate(image1, size=padded, mode="bilinear", align_corners=True)
            flow = self.model(image0, image1, **UNIMATCH_INFERENCE_KWARGS)["flow_preds"][-1]  # (P, 2, h, w)
            if padded != size:
                flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
                scale = torch.tensor([size[1] / padded[1], size[0] / padded[0]], device=flow.device)
                flow = flow * scale.view(1, 2, 1, 1)
            magnitude = torch.linalg.vector_norm(flow.float(), dim=1)  # (P, H, W)
        if transposed:
            magnitude = magnitude.transpose(-2, -1)
        return magnitude.cpu().numpy()


def _sha256_prefix(path: str, num_chars: int = 8) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:num_chars]


def _import_unimatch_class(repo: str) -> type:
    """``unimatch.unimatch.UniMatch`` from the checkout at ``repo`` (not from anywhere else)."""
    repo = os.path.abspath(repo)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    module = importlib.import_module("unimatch.unimatch")
    origin = os.path.abspath(module.__file__ or "")
    if not origin.startswith(repo + os.sep):
        raise ValueError(f"motion.unimatch_repo={repo!r}, but 'unimatch' is already imported from {origin}")
    return module.UniMatch


def load_unimatch(repo: str | None, weights: str | None, device: str, batch_pairs: int = 8) -> UniMatchFlow:
    """Build UniMatch with the published settings from a local checkout and load local weights
    (a training checkpoint ``{"model": state_dict, ...}`` or a bare state dict), strictly."""
    if not repo or not os.path.isdir(os.path.join(repo, "unimatch")):
        raise FileNotFoundError(f"motion.unimatch_repo={repo!r} is not a checkout of autonomousvision/unimatch")
    if not weights or not os.path.isfile(weights):
        raise FileNotFoundError(f"motion.unimatch_weights={weights!r} is not a file")
    import torch

    model = _import_unimatch_class(repo)(**UNIMATCH_MODEL_KWARGS)
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    state = checkpoint["model"] if isinstance(checkpoint, dict) and "model" in checkpoint else checkpoint
    model.load_state_dict(state, strict=True)
    return UniMatchFlow(model, device, weights_id=f"sha256:{_sha256_prefix(weights)}", batch_pairs=batch_pairs)


def make_backend(config: MotionConfig) -> FlowBackend:
    if config.backend == "opencv_dis":
        return DISFlow(config.dis_preset)
    if config.backend == "opencv_farneback":
        return FarnebackFlow()
    return load_unimatch(config.unimatch_repo, config.unimatch_weights, config.device, config.unimatch_batch_pairs)


# --- scoring a clip, and the decision ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MotionScores:
    """One clip's scores, before they become columns."""

    flow_mean: float  # frame diagonals per second
    moving_fraction: float  # 0-1
    num_pairs: int  # distinct frame pairs measured


def motion_scores(
    backend: FlowBackend, frames: np.ndarray, times_s: np.ndarray, moving_min_flow: float
) -> MotionScores:
    """Score sampled frames (N, H, W[, 3]) at ``times_s`` (N,); pairs are averaged with equal weight."""
    pairs = distinct_pairs(times_s)
    means, fractions = [], []
    for start in range(0, len(pairs), backend.batch_pairs):
        chunk = pairs[start : start + backend.batch_pairs]
        magnitudes = backend.flow_magnitudes(frames[chunk], frames[chunk + 1])
        for i, magnitude in zip(chunk, magnitudes):
            mean, fraction = pair_scores(magnitude, float(times_s[i + 1] - times_s[i]), moving_min_flow)
            means.append(mean)
            fractions.append(fraction)
    if not means:
        return MotionScores(0.0, 0.0, 0)
    return MotionScores(float(np.mean(means)), float(np.mean(fractions)), len(means))


def decide(config: MotionConfig, scores: Mapping[str, Any]) -> Rejection | None:
    """The decision from stored score columns (a row) and the config's threshold. Pure: used by
    ``Motion.process`` and by ``javis refilter`` to re-threshold without decoding."""
    value = scores.get(Col.MOTION_FLOW_MEAN)
    if value is None:
        raise ValueError(f"row has no {Col.MOTION_FLOW_MEAN} score: the motion stage never scored it")
    if value < config.min_flow:
        return Rejection(
            "static",
            metric=Col.MOTION_FLOW_MEAN,
            value=float(value),
            threshold=config.min_flow,
            detail=f"mean optical flow {value:.4g} frame diagonals/s < {config.min_flow:g}",
        )
    return None


class Motion:
    """See the module docstring. Input: ``decoded`` (frames named ``motion``); output:
    ``motion_flow_mean``, ``motion_moving_fraction``, ``motion_backend``; reason: ``static``."""

    name: ClassVar[str] = "motion"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("static",)
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED,)
    produces: ClassVar[tuple[str, ...]] = (Col.MOTION_FLOW_MEAN, Col.MOTION_MOVING_FRACTION, Col.MOTION_BACKEND)

    @staticmethod
    def frame_need(config: MotionConfig) -> FrameNeed | None:
        if not config.enabled:
            return None
        if config.backend == "unimatch":  # UniMatch was trained on RGB
            return FrameNeed(name=Motion.name, fps=config.sample_fps, max_side=config.unimatch_max_side)
        return FrameNeed(name=Motion.name, fps=config.sample_fps, max_side=config.max_side, gray=True)

    @staticmethod
    def needs_audio(config: MotionConfig) -> bool:
        return False

    def __init__(self, config: MotionConfig, backend: FlowBackend | None = None) -> None:
        """``backend``: a ready backend (tests, or a caller sharing one model); else built from config."""
        self.config = config
        self.backend = backend if backend is not None else make_backend(config)
        self.backend_id = self.backend.backend_id

    def process(self, row: dict[str, Any]) -> Outcome:
        clip = DecodedClip.from_row(row)
        if self.name not in clip.frames:
            raise ValueError(
                f"the analysis pack has no {self.name!r} frames: scene_cut's pack plan lacks Motion's need"
            )
        frames, times_s = clip.frames[self.name], clip.frame_times_s[self.name]
        scores = motion_scores(self.backend, frames, times_s, self.config.moving_min_flow)
        columns = {
            Col.MOTION_FLOW_MEAN: scores.flow_mean,
            Col.MOTION_MOVING_FRACTION: scores.moving_fraction,
            Col.MOTION_BACKEND: self.backend_id,
        }
        rejection = decide(self.config, columns)
        if rejection is None:
            return passed(**columns)
        if scores.num_pairs == 0:
            detail = f"fewer than 2 distinct sampled frames ({len(times_s)} sampled): no motion measurable"
            rejection = dataclasses.replace(rejection, detail=detail)
        return Outcome(columns=columns, rejection=rejection)
