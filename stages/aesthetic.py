"""aesthetic: reject clips whose sampled frames look poor.

Frames at ``positions`` (relative, in the clip) are scored one by one; the clip's score is the
mean over its frames (the decision) and the minimum (kept for auditors). Two backends, each with
its own columns so a score on one scale is never read as a score on the other:

* ``laion`` (production): CLIP ViT-L/14 image embeddings, L2-normalised, through the LAION
  "improved aesthetic predictor" MLP (``sac+logos+ava1-l14-linearMSE.pth``), LAION's 0-10 scale.
  The paper drops clips below 4.5. Weights come from local paths only. All frames of a clip go
  through CLIP in one batch. Columns ``aesthetic_laion_mean`` / ``_min``; reason ``low_aesthetic``.
* ``image_quality`` (CPU default, no weights): NOT an aesthetic model. A transparent 0-10 score
  from signal measures (sharpness, exposure, contrast, colourfulness) on a fixed-size downscale;
  formulas in :func:`frame_measures` / :func:`image_quality_score` and docs/filters/aesthetic.md.
  Columns ``aesthetic_iq_mean`` / ``_min`` and, to explain them, the four sub-scores
  ``aesthetic_iq_sharpness`` / ``_exposure`` / ``_contrast`` / ``_colour`` (0-1, each the mean over
  the sampled frames; the score combines them per frame, so for one frame
  ``iq = 10 * cbrt(sharpness * exposure * contrast) * (0.75 + 0.25 * colour)`` exactly, and for
  several the means only explain it). Reason ``low_image_quality``.

Both write ``aesthetic_backend`` (name + formula version / weights hash); the LAION backend has
no components (its sub-score columns stay null). A clip without video
frames is rejected as ``no_frames``: no rerun can score it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, Rejection
from stages.decode import DecodedClip, FrameNeed

log = logging.getLogger(__name__)

BACKENDS = ("image_quality", "laion")

# --- image-quality constants (changing any of them changes stored scores: bump IQ_VERSION) ---
IQ_VERSION = 1
ANALYSIS_SIDE_PX = 256  # longer side of the analysis image: measures do not depend on resolution
SHARPNESS_LOG10_RANGE = (1.0, 3.0)  # log10 Laplacian variance: 10 (heavy blur) -> 0, 1000 (crisp) -> 1
DARK_RAMP = (0.03, 0.20)  # mean luma: 0 at or below 0.03 (black), 1 from 0.20
BRIGHT_RAMP = (0.80, 0.97)  # mean luma: 1 up to 0.80, 0 at or above 0.97 (white)
CLIPPED_LUMA = (3.0, 252.0)  # 8-bit luma at or beyond these counts as crushed / blown out
CLIPPED_RAMP = (0.10, 0.50)  # clipped fraction: no penalty up to 10 %, 0 from 50 %
CONTRAST_FULL_STD = 0.20  # luma std (0-1 scale) from which contrast counts as full
COLOURFULNESS_FULL = 80.0  # Hasler & Suesstrunk M from which colour counts as full ("highly colourful": 82)
COLOUR_WEIGHT = 0.25  # colour can lift a frame by at most this fraction: grey footage is not a defect


@dataclasses.dataclass(frozen=True)
class AestheticConfig:
    enabled: bool = True  # false: the stage is left out of the pipeline
    backend: str = "image_quality"  # "image_quality" (CPU, signal measures) or "laion" (CLIP + LAION MLP)
    positions: tuple[float, ...] = (0.1, 0.5, 0.9)  # frames scored, relative positions in the clip
    max_side: int = 512  # decode size; >= 256 so neither the analysis nor CLIP (224 px) upscales
    min_image_quality: float = 3.0  # image_quality: reject below this mean (0-10; calibration in docs)
    min_laion_score: float = 4.5  # laion: reject below this mean (0-10; the paper's threshold)
    clip_model_dir: str | None = None  # laion: local dir of a saved openai/clip-vit-large-patch14
    mlp_weights: str | None = None  # laion: local sac+logos+ava1-l14-linearMSE.pth (state dict)
    device: str = "cuda"  # laion: torch device

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", tuple(float(p) for p in self.positions))
        if self.backend not in BACKENDS:
            raise ValueError(f"aesthetic.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.positions or any(not 0.0 <= p <= 1.0 for p in self.positions):
            raise ValueError("aesthetic.positions must be a non-empty list of values in [0, 1]")
        if self.max_side < ANALYSIS_SIDE_PX:
            raise ValueError(f"aesthetic.max_side must be >= {ANALYSIS_SIDE_PX}")
        for key in ("min_image_quality", "min_laion_score"):
            if not 0.0 <= getattr(self, key) <= 10.0:
                raise ValueError(f"aesthetic.{key} must be in [0, 10]")
        if self.backend == "laion":
            for key in ("clip_model_dir", "mlp_weights"):
                if not getattr(self, key):
                    raise ValueError(f"aesthetic.{key} must be set when aesthetic.backend is 'laion'")
        if not self.device:
            raise ValueError("aesthetic.device must not be empty")


# --- image quality: pure functions -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrameMeasures:
    """Raw signal measures of one frame, at the analysis size."""

    laplacian_var: float  # variance of the 4-neighbour Laplacian of 8-bit luma
    mean_luma: float  # 0-1
    std_luma: float  # 0-1 (RMS contrast)
    clipped_fraction: float  # share of pixels crushed to black or blown to white
    colourfulness: float  # Hasler & Suesstrunk M, on 0-255 channels


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between."""
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def analysis_image(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> float64 RGB with the longer side ANALYSIS_SIDE_PX (area resampling),
    so a 4K and a 360p copy of a shot get nearly the same measures."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    scale = ANALYSIS_SIDE_PX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA).astype(np.float64)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) M = sigma_rgyb + 0.3 mu_rgyb, with rg = R - G and
    yb = (R + G) / 2 - B on 0-255 channels. 0 for grey; ~59 "quite", ~109 "extremely" colourful."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def frame_measures(frame: np.ndarray) -> FrameMeasures:
    rgb = analysis_image(frame)
    luma = rgb @ np.array([0.299, 0.587, 0.114])  # BT.601, 0-255
    laplacian = cv2.Laplacian(luma, cv2.CV_64F, ksize=1)  # kernel [[0,1,0],[1,-4,1],[0,1,0]]
    clipped = (luma <= CLIPPED_LUMA[0]) | (luma >= CLIPPED_LUMA[1])
    return FrameMeasures(
        laplacian_var=float(laplacian.var()),
        mean_luma=float(luma.mean() / 255.0),
        std_luma=float(luma.std() / 255.0),
        clipped_fraction=float(clipped.mean()),
        colourfulness=colourfulness(rgb),
    )


def sub_scores(m: FrameMeasures) -> dict[str, float]:
    """Each measure mapped to [0, 1] with the module's constants."""
    log_var = math.log10(m.laplacian_var) if m.laplacian_var > 0 else -math.inf
    level = min(ramp(m.mean_luma, *DARK_RAMP), 1.0 - ramp(m.mean_luma, *BRIGHT_RAMP))
    return {
        "sharpness": ramp(log_var, *SHARPNESS_LOG10_RANGE),
        "exposure": level * (1.0 - ramp(m.clipped_fraction, *CLIPPED_RAMP)),
        "contrast": min(1.0, m.std_luma / CONTRAST_FULL_STD),
        "colour": min(1.0, m.colourfulness / COLOURFULNESS_FULL),
    }


def combine_sub_scores(s: Mapping[str, float]) -> float:
    """0-10: 10 * cbrt(sharpness * exposure * contrast) * (1 - COLOUR_WEIGHT + COLOUR_WEIGHT * colour).

    The geometric mean makes any one defect (blur, black, flat) sink the frame, whatever the
    others; colour only lifts, so black-and-white footage loses at most COLOUR_WEIGHT."""
    defects = (s["sharpness"] * s["exposure"] * s["contrast"]) ** (1.0 / 3.0)
    return 10.0 * defects * (1.0 - COLOUR_WEIGHT + COLOUR_WEIGHT * s["colour"])


def image_quality_score(frame: np.ndarray) -> float:
    """One frame's image-quality score, 0-10 (:func:`combine_sub_scores` of its sub-scores)."""
    return combine_sub_scores(sub_scores(frame_measures(frame)))


#: sub-score -> the column that stores its mean over a clip's sampled frames
SUB_SCORE_COLUMNS = {
    "sharpness": Col.AESTHETIC_IQ_SHARPNESS,
    "exposure": Col.AESTHETIC_IQ_EXPOSURE,
    "contrast": Col.AESTHETIC_IQ_CONTRAST,
    "colour": Col.AESTHETIC_IQ_COLOUR,
}


class ImageQualityScore:
    """Signal-based image quality, 0-10 (see :func:`image_quality_score`). Needs no weights."""

    name: ClassVar[str] = "image_quality"
    version: ClassVar[str] = f"v{IQ_VERSION}"

    def __init__(self) -> None:
        self.backend_id = f"{self.name}/{self.version}+opencv-{cv2.__version__}"

    def score(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N,) scores."""
        return self.score_and_components(frames)[0]

    def score_and_components(self, frames: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """(N, H, W, 3) uint8 RGB -> (N,) scores, and each sub-score's mean over the N frames
        (by its column name), from one measurement of each frame."""
        parts = [sub_scores(frame_measures(f)) for f in frames]
        scores = np.array([combine_sub_scores(p) for p in parts], dtype=np.float64)
        return scores, {col: float(np.mean([p[key] for p in parts])) for key, col in SUB_SCORE_COLUMNS.items()}


# --- LAION: CLIP ViT-L/14 + aesthetic MLP ------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_laion_head(input_size: int = 768) -> Any:
    """The published MLP (improved-aesthetic-predictor); its ``layers.N`` keys match the .pth."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(input_size, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )


def load_laion_head(path: str | Path) -> Any:
    """The MLP from a state dict with keys ``layers.0.weight`` ... ``layers.7.bias`` (the public
    file's layout; a Lightning ``{"state_dict": ...}`` wrapper or a ``module.`` prefix is accepted)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or "layers.0.weight" not in {k.removeprefix("module.") for k in state}:
        raise ValueError(f"aesthetic.mlp_weights: {path} is not a LAION aesthetic MLP state dict (no layers.0.weight)")
    state = {k.removeprefix("module.").removeprefix("layers."): v for k, v in state.items()}
    head = build_laion_head(int(state["0.weight"].shape[1]))
    try:
        head.load_state_dict(state)
    except RuntimeError as e:  # missing / unexpected keys or wrong shapes
        raise ValueError(f"aesthetic.mlp_weights: {path} does not fit the LAION MLP: {e}") from e
    return head.eval()


def _require_path(key: str, value: str | None, is_dir: bool) -> Path:
    if not value:
        raise ValueError(f"aesthetic.{key} must be set for the laion backend")
    path = Path(value)
    if not (path.is_dir() if is_dir else path.is_file()):
        raise FileNotFoundError(f"aesthetic.{key}: no such {'directory' if is_dir else 'file'}: {value}")
    return path


def load_clip(clip_dir: Path, device: Any) -> tuple[Any, Any]:
    """(image processor, vision model with projection) from a local ``save_pretrained`` dir."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    for required in ("config.json", "preprocessor_config.json"):
        if not (clip_dir / required).is_file():
            raise FileNotFoundError(f"aesthetic.clip_model_dir: {clip_dir} has no {required}")
    processor = CLIPImageProcessor.from_pretrained(clip_dir, local_files_only=True)
    model, info = CLIPVisionModelWithProjection.from_pretrained(
        clip_dir, local_files_only=True, output_loading_info=True
    )
    if info["missing_keys"]:  # transformers would fill them with random values and carry on
        missing = sorted(info["missing_keys"])
        raise ValueError(f"aesthetic.clip_model_dir: {clip_dir} lacks CLIP vision weights: {missing[:5]}")
    return processor, model.to(device).eval()


class ClipLaionAesthetic:
    """CLIP ViT-L/14 image embeddings -> L2 normalisation -> LAION aesthetic MLP, 0-10.

    ``clip_model_dir`` is a ``save_pretrained`` directory (a full CLIPModel, as published for
    openai/clip-vit-large-patch14, or a CLIPVisionModelWithProjection) with its
    ``preprocessor_config.json``; ``mlp_weights`` the MLP's state dict."""

    name: ClassVar[str] = "laion"

    def __init__(self, clip_model_dir: str | None, mlp_weights: str | None, device: str) -> None:
        import torch

        clip_dir = _require_path("clip_model_dir", clip_model_dir, is_dir=True)
        weights = _require_path("mlp_weights", mlp_weights, is_dir=False)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"aesthetic.device is {device!r} but no CUDA device is visible")
        self.device = torch.device(device)
        self.head = load_laion_head(weights).to(self.device)
        self.processor, self.model = load_clip(clip_dir, self.device)
        embed_dim = self.model.config.projection_dim
        if self.head[0].in_features != embed_dim:
            raise ValueError(
                f"aesthetic.mlp_weights expects {self.head[0].in_features}-d embeddings, "
                f"but the CLIP model in aesthetic.clip_model_dir makes {embed_dim}-d ones"
            )
        self.version = f"sha256:{sha256_file(weights)[:8]}"  # of the MLP weights
        self.backend_id = f"laion-mlp/{self.version}+clip/{clip_dir.resolve().name}"

    def score(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N,) scores, all frames in one forward pass."""
        import torch

        inputs = self.processor(images=list(frames), return_tensors="pt", input_data_format="channels_last")
        with torch.inference_mode():
            embeds = self.model(pixel_values=inputs["pixel_values"].to(self.device)).image_embeds  # (N, 768)
            embeds = embeds / embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # as the reference
            scores = self.head(embeds.float()).squeeze(-1)  # (N,)
        result = scores.cpu().numpy().astype(np.float64)
        if not np.isfinite(result).all():
            raise ValueError(f"the LAION aesthetic head returned non-finite scores: {result}")
        return result

    def score_and_components(self, frames: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """The scores; a learned head has no stored components."""
        return self.score(frames), {}


# --- the decision and the stage ------------------------------------------------------------------

_COLUMNS = {  # backend -> (mean column, min column, threshold field, reason)
    "image_quality": (Col.AESTHETIC_IQ_MEAN, Col.AESTHETIC_IQ_MIN, "min_image_quality", "low_image_quality"),
    "laion": (Col.AESTHETIC_LAION_MEAN, Col.AESTHETIC_LAION_MIN, "min_laion_score", "low_aesthetic"),
}


def decide(config: AestheticConfig, scores: Mapping[str, Any]) -> Rejection | None:
    """The decision from stored score columns (a row) and the config's threshold for its backend.
    Used by :meth:`Aesthetic.process` and by ``javis refilter``."""
    mean_col, min_col, threshold_key, reason = _COLUMNS[config.backend]
    value = scores.get(mean_col)
    if value is None:
        others = [c for b, (c, *_) in _COLUMNS.items() if b != config.backend and scores.get(c) is not None]
        if others:
            raise ValueError(
                f"the row was scored by another aesthetic backend ({scores.get(Col.AESTHETIC_BACKEND)}); "
                f"re-thresholding with aesthetic.backend={config.backend!r} needs a rescore"
            )
        return Rejection("no_frames", detail="the clip has no video frames to score")
    threshold = getattr(config, threshold_key)
    if value < threshold:
        worst = scores.get(min_col)
        detail = f"mean {value:.2f} < {threshold} over the sampled frames" + (
            f" (worst frame {worst:.2f})" if worst is not None else ""
        )
        return Rejection(reason, metric=mean_col, value=float(value), threshold=threshold, detail=detail)
    return None


def make_backend(config: AestheticConfig) -> ImageQualityScore | ClipLaionAesthetic:
    if config.backend == "laion":
        return ClipLaionAesthetic(config.clip_model_dir, config.mlp_weights, config.device)
    return ImageQualityScore()


class Aesthetic:
    """Scores sampled frames of a clip (input: ``decoded``) with the configured backend.

    Output: ``aesthetic_backend`` and the backend's ``*_mean`` / ``*_min`` columns (the other
    backend's stay None), and the image-quality sub-scores (``aesthetic_iq_sharpness`` ...,
    image_quality only). Reasons: ``low_image_quality``, ``low_aesthetic``, ``no_frames``."""

    name: ClassVar[str] = "aesthetic"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("low_image_quality", "low_aesthetic", "no_frames")
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED,)
    produces: ClassVar[tuple[str, ...]] = (
        Col.AESTHETIC_BACKEND,
        Col.AESTHETIC_LAION_MEAN,
        Col.AESTHETIC_LAION_MIN,
        Col.AESTHETIC_IQ_MEAN,
        Col.AESTHETIC_IQ_MIN,
        *SUB_SCORE_COLUMNS.values(),
    )

    @staticmethod
    def frame_need(config: AestheticConfig) -> FrameNeed | None:
        if not config.enabled:
            return None
        return FrameNeed(name=Aesthetic.name, positions=config.positions, max_side=config.max_side)

    @staticmethod
    def needs_audio(config: AestheticConfig) -> bool:
        return False

    def __init__(self, config: AestheticConfig) -> None:
        self.config = config
        self.backend = make_backend(config)
        self.backend_id = self.backend.backend_id
        log.info("aesthetic backend: %s", self.backend_id)

    def process(self, row: dict[str, Any]) -> Outcome:
        decoded = DecodedClip.from_row(row)
        if self.name not in decoded.frames:  # a wiring mistake, not a property of the clip
            raise ValueError(
                "the analysis pack has no 'aesthetic' frames: scene_cut's pack plan lacks Aesthetic.frame_need"
            )
        frames = decoded.frames[self.name]
        columns: dict[str, Any] = {c: None for c in self.produces}
        columns[Col.AESTHETIC_BACKEND] = self.backend_id
        if len(frames) > 0:
            scores, components = self.backend.score_and_components(frames)
            mean_col, min_col, _, _ = _COLUMNS[self.config.backend]
            columns[mean_col] = float(scores.mean())
            columns[min_col] = float(scores.min())
            columns.update(components)
        return Outcome(columns=columns, rejection=decide(self.config, columns))
