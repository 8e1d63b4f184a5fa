"""Reward models for preference data (``javis preference``): one interface, four modalities.

A :class:`Reward` scores generated candidates (:class:`Candidate`: the prompt, frames sampled at
``fps`` from the written MP4, and its 16 kHz mono audio) and returns one :class:`RewardScore` per
candidate, higher is better. Each reward names its ``modality`` (``audio`` | ``video`` |
``semantic`` | ``sync``), a ``version`` (formula version, or the weights' hash for learned
models) and ``resolution``: the smallest difference of its raw score that means anything, in the
score's own units (the ranking's z-score uses it as the floor of the per-prompt spread, see
``pipeline/preference_rank.py``). A reward raises for a candidate it cannot score; the pipeline
records that candidate as failed at the ``score`` stage.

================  ==================================  =======================================
modality          production (local weights)          CPU (no weights)
================  ==================================  =======================================
audio             ``audiobox_aesthetics``              ``audio_signal_quality`` (formula below)
video             ``laion_aesthetic`` + ``optical_flow_motion`` (unimatch)
                                                      ``image_quality`` + ``optical_flow_motion``
semantic          ``imagebind_text_video``,            none: semantic is not scored on CPU
                  ``imagebind_text_audio``
sync              ``javisscore`` (ImageBind)           ``av_align``
================  ==================================  =======================================

Scores and ranges:

- ``audio_signal_quality`` (0-10, v1): NOT a learned aesthetic; four signal sub-scores in [0, 1]
  combined as ``10 * (level * clipping * dropout * tonality) ** (1/4)`` so any one defect sinks
  it. level = ramp(mean dBFS, -60, -35) (-60: the sound filter's silence floor); clipping =
  1 - ramp(share of samples with |x| >= 0.99, 0.1 %, 2 %); dropout = 1 - ramp(share of 50 ms
  frames below -60 dBFS, 10 %, 60 %); tonality = 1 - ramp(spectral flatness, 0.1, 0.5), the
  flatness (geometric / arithmetic mean of the Hann-windowed power spectrum, 1024-sample frames)
  averaged over non-silent frames: white noise is ~0.56, tones and voices far lower.
- ``audiobox_aesthetics``: Meta's Audiobox Aesthetics (WavLM + four heads) on 10 s windows (zero
  padded, weighted by their valid length), as its documented inference; the reward is the mean of
  ``audiobox_axes`` (default CE, CU, PQ: enjoyment, usefulness, production quality; PC, production
  complexity, is not a quality) on its 1-10 scale; all four axes go to the details.
- ``image_quality`` / ``laion_aesthetic``: the aesthetic filter's backends (``stages/aesthetic.py``)
  on the frames at ``positions``, mean over frames (0-10 each).
- ``optical_flow_motion`` (v1): the motion filter's flow (``stages/motion.py``, frame diagonals per
  second) ``m``; reward ``-|log10(m / clip(m, lo, hi))|``, 0 inside the band ``motion_band``
  (default 0.003, the motion filter's static threshold, to 0.5: half the diagonal a second),
  negative outside: a static clip loses, and so does gross flow. ``m`` is floored at 1e-6. It does
  not detect flicker (unrelated consecutive frames give moderate flow from the matcher; the
  OpenCV matchers also underestimate displacements of tens of pixels): temporal consistency is
  what VideoAlign's motion-quality head would add.
- ``imagebind_text_video`` / ``imagebind_text_audio``: cosine between ImageBind's text embedding
  of the prompt and the mean unit embedding of the frames (up to ``semantic_num_frames``, evenly
  spaced) / of the 2 s audio windows (JavisScore's windows), in [-1, 1].
- ``javisscore`` / ``av_align``: ``stages/av_sync.py`` ([-1, 1] / an IoU >= 0).

VideoAlign (KwaiVGI/VideoAlign) is not built: it is a Qwen2-VL-2B reward model whose inference
code lives in its repository (no package), run on a GPU with its own video preprocessing; its
role here (visual and motion quality) is held by the aesthetic and motion scores.

(Over the 400-line guide: one interface, its config and nine backends over four modalities; each
backend is a thin adapter over a filter's scorer, and splitting them would scatter the contract.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from stages.aesthetic import ramp
from stages.sound import to_dbfs

MODALITIES = ("audio", "video", "semantic", "sync")
AUDIO_RATE_HZ = 16_000
BACKENDS = {  # name -> modality
    "audio_signal_quality": "audio", "audiobox_aesthetics": "audio",
    "image_quality": "video", "laion_aesthetic": "video", "optical_flow_motion": "video",
    "imagebind_text_video": "semantic", "imagebind_text_audio": "semantic",
    "av_align": "sync", "javisscore": "sync",
}  # fmt: skip
AUDIOBOX_AXES = ("CE", "CU", "PC", "PQ")
# each reward's resolution: the smallest difference of its raw score that means something, in its
# own units (a quarter point on the 0-10 scales, a tenth on Audiobox's 1-10, 0.01 of a cosine, a
# twentieth of a decade of flow, 0.05 of an IoU); the ranking floors the per-prompt std with it
RESOLUTION = {
    "audio_signal_quality": 0.25, "audiobox_aesthetics": 0.1, "image_quality": 0.25, "laion_aesthetic": 0.25,
    "optical_flow_motion": 0.05, "imagebind_text_video": 0.01, "imagebind_text_audio": 0.01,
    "av_align": 0.05, "javisscore": 0.02,
}  # fmt: skip

# the learned rewards: the config keys of their local weights (they run on ``rewards.device``)
WEIGHTS = {
    "audiobox_aesthetics": ("audiobox_weights",), "laion_aesthetic": ("clip_model_dir", "laion_mlp_weights"),
    "imagebind_text_video": ("imagebind_weights",), "imagebind_text_audio": ("imagebind_weights",),
    "javisscore": ("imagebind_weights",),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RewardsConfig:
    """The ``rewards`` section: backends per modality (an empty list: the modality is not scored),
    their weights' local paths, and the modality weights of the overall score."""

    audio: tuple[str, ...] = ("audio_signal_quality",)
    video: tuple[str, ...] = ("image_quality", "optical_flow_motion")
    semantic: tuple[str, ...] = ()  # production: imagebind_text_video, imagebind_text_audio
    sync: tuple[str, ...] = ("av_align",)
    weight_audio: float = 1.0  # the overall score is the weighted mean of the scored modalities
    weight_video: float = 1.0
    weight_semantic: float = 1.0
    weight_sync: float = 1.0
    fps: float = 8.0  # frames per second decoded for scoring (AV-Align's match window is 1 / fps)
    max_side: int = 256  # decode size: the image-quality analysis size; CLIP and ImageBind use 224
    positions: tuple[float, ...] = (0.1, 0.5, 0.9)  # image_quality / laion_aesthetic frames
    motion_band: tuple[float, float] = (0.003, 0.5)  # optical_flow_motion: no penalty inside (diag/s)
    flow_backend: str = "opencv_dis"  # optical_flow_motion: opencv_dis | opencv_farneback | unimatch
    unimatch_repo: str | None = None
    unimatch_weights: str | None = None
    audiobox_weights: str | None = None  # local checkpoint.pt, or a folder with config.json + model.safetensors
    audiobox_axes: tuple[str, ...] = ("CE", "CU", "PQ")
    imagebind_weights: str | None = None  # local imagebind_huge.pth (semantic and javisscore)
    imagebind_bpe: str | None = None  # ImageBind's bpe_simple_vocab_16e6.txt.gz (default: the package's)
    semantic_num_frames: int = 8
    clip_model_dir: str | None = None  # laion_aesthetic, as aesthetic.clip_model_dir
    laion_mlp_weights: str | None = None
    device: str = "cuda"  # production backends' torch device

    def __post_init__(self) -> None:
        for modality in MODALITIES:
            names = tuple(getattr(self, modality))
            object.__setattr__(self, modality, names)
            for name in names:
                if BACKENDS.get(name) != modality:
                    known = [n for n, m in BACKENDS.items() if m == modality]
                    raise ValueError(f"rewards.{modality}: {name!r} is not a {modality} reward (known: {known})")
            if getattr(self, f"weight_{modality}") < 0:
                raise ValueError(f"rewards.weight_{modality} must be >= 0")
        object.__setattr__(self, "positions", tuple(float(p) for p in self.positions))
        object.__setattr__(self, "motion_band", tuple(float(b) for b in self.motion_band))
        object.__setattr__(self, "audiobox_axes", tuple(self.audiobox_axes))
        if not self.scored_modalities:
            raise ValueError("rewards: no modality has a backend with a positive weight")
        if len(self.motion_band) != 2 or not 0 < self.motion_band[0] < self.motion_band[1]:
            raise ValueError("rewards.motion_band must be [low, high] with 0 < low < high")
        if not set(self.audiobox_axes) <= set(AUDIOBOX_AXES) or not self.audiobox_axes:
            raise ValueError(f"rewards.audiobox_axes must be a non-empty subset of {AUDIOBOX_AXES}")
        if not 1 <= self.fps <= 60 or self.max_side < 32 or self.semantic_num_frames < 1:
            raise ValueError("rewards.fps must be in [1, 60], max_side >= 32, semantic_num_frames >= 1")
        for name in self.backends:
            for key in WEIGHTS.get(name, ()):
                if not getattr(self, key):
                    raise ValueError(f"rewards.{key} must be set to use the {name} reward (weights are never downloaded)")

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(n for m in MODALITIES for n in getattr(self, m))

    @property
    def scored_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) and getattr(self, f"weight_{m}") > 0)

    def unscored(self) -> dict[str, str]:
        """modality -> why it is not scored (for the manifest and ledger)."""
        why = {}
        for m in MODALITIES:
            if not getattr(self, m):
                why[m] = f"no backend configured (rewards.{m} is empty)" + (
                    ": the semantic rewards need ImageBind weights (rewards.imagebind_weights), there is no CPU one"
                    if m == "semantic" else "")  # fmt: skip
            elif getattr(self, f"weight_{m}") == 0:
                why[m] = f"rewards.weight_{m} is 0"
        return why


@dataclasses.dataclass(frozen=True)
class Candidate:
    """What a reward sees of one generated candidate."""

    candidate_id: str
    prompt: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, one every 1 / fps s from t = 0
    fps: float
    audio: np.ndarray  # (S,) float32 mono in [-1, 1] at AUDIO_RATE_HZ

    @property
    def frame_times_s(self) -> np.ndarray:
        return np.arange(len(self.frames)) / self.fps


@dataclasses.dataclass(frozen=True)
class RewardScore:
    value: float
    details: dict[str, float | int | str] = dataclasses.field(default_factory=dict)


class Reward(Protocol):
    """Scores candidates; higher is better. See the module docstring."""

    name: str
    modality: str
    version: str
    resolution: float  # smallest meaningful difference of the raw score (the z-score's std floor)

    def score(self, candidates: Sequence[Candidate]) -> list[RewardScore]: ...


def _at_positions(frames: np.ndarray, positions: Sequence[float]) -> np.ndarray:
    if len(frames) == 0:
        raise ValueError("the candidate has no frames")
    return frames[[min(len(frames) - 1, round(p * (len(frames) - 1))) for p in positions]]


# --- audio ----------------------------------------------------------------------------------------

SIGNAL_QUALITY_VERSION = 1
CLIP_LEVEL, FRAME_S, FLATNESS_FRAME = 0.99, 0.05, 1024
SILENT_DBFS = -60.0  # the sound filter's default silence floor


def spectral_flatness(audio: np.ndarray, frame: int = FLATNESS_FRAME) -> np.ndarray:
    """Per-frame flatness (geometric / arithmetic mean of the Hann-windowed power spectrum, DC
    left out) of non-overlapping ``frame``-sample frames; (num_frames,)."""
    num = len(audio) // frame
    if num == 0:
        return np.zeros(0)
    frames = audio[: num * frame].reshape(num, frame).astype(np.float64) * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1))[:, 1:] ** 2 + 1e-20
    return np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)


def audio_signal_parts(audio: np.ndarray) -> dict[str, float]:
    """The four sub-scores in [0, 1] and the raw measures behind them (module docstring)."""
    x = np.asarray(audio, np.float64)
    if x.size == 0:
        raise ValueError("the candidate has no audio samples")
    mean_dbfs = to_dbfs(float(np.mean(x * x)))
    clipped = float(np.mean(np.abs(x) >= CLIP_LEVEL))
    hop = int(FRAME_S * AUDIO_RATE_HZ)
    frame_dbfs = np.array([to_dbfs(float(np.mean(x[i : i + hop] ** 2))) for i in range(0, len(x), hop)])
    silent = float(np.mean(frame_dbfs < SILENT_DBFS))
    flat = spectral_flatness(x)
    loud = np.array([to_dbfs(float(np.mean(x[i * FLATNESS_FRAME : (i + 1) * FLATNESS_FRAME] ** 2))) >= SILENT_DBFS
                     for i in range(len(flat))], bool)  # fmt: skip
    flatness = float(flat[loud].mean()) if loud.any() else 1.0  # nothing audible: no tonality
    return {
        "level": ramp(mean_dbfs, SILENT_DBFS, -35.0),
        "clipping": 1.0 - ramp(clipped, 0.001, 0.02),
        "dropout": 1.0 - ramp(silent, 0.1, 0.6),
        "tonality": 1.0 - ramp(flatness, 0.1, 0.5),
        "mean_dbfs": mean_dbfs, "clipped_fraction": clipped, "silent_fraction": silent, "flatness": flatness,
    }  # fmt: skip


class AudioSignalQuality:
    """audio_signal_quality (0-10): loudness, clipping, dropouts and noisiness; no weights."""

    name, modality = "audio_signal_quality", "audio"
    resolution = RESOLUTION[name]
    version = f"audio_signal_quality/v{SIGNAL_QUALITY_VERSION}"

    def score(self, candidates: Sequence[Candidate]) -> list[RewardScore]:
        out = []
        for c in candidates:
            parts = audio_signal_parts(c.audio)
            value = 10.0 * (parts["level"] * parts["clipping"] * parts["dropout"] * parts["tonality"]) ** 0.25
            out.append(RewardScore(value, parts))
        return out


class AudioboxAesthetics:
    """Audiobox Aesthetics on any module with ``AesMultiOutput``'s forward and ``target_transform``."""

    name, modality = "audiobox_aesthetics", "audio"
    resolution = RESOLUTION[name]
    WINDOW_S = 10.0  # the model's window and hop (its inference code: 10 s, 10 s)

    def __init__(self, model: Any, device: str, version: str, axes: Sequence[str] = ("CE", "CU", "PQ")) -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"rewards.device={device!r} but torch sees no CUDA device")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.axes = tuple(axes)
        self.version = f"audiobox_aesthetics/{version}"

    def axis_scores(self, audio: np.ndarray) -> dict[str, float]:
        """All four axes on their 1-10 scale: window predictions, de-normalised, weighted by valid length."""
        import torch

        win = int(self.WINDOW_S * AUDIO_RATE_HZ)
        starts = range(0, max(1, len(audio)), win)
        wavs, masks, weights = torch.zeros(len(starts), 1, win), torch.zeros(len(starts), 1, win, dtype=torch.bool), []
        for i, s in enumerate(starts):
            piece = torch.as_tensor(np.asarray(audio[s : s + win], np.float32))
            wavs[i, 0, : len(piece)], masks[i, 0, : len(piece)] = piece, True
            weights.append(len(piece) / win)
        with torch.inference_mode():
            preds = self.model({"wav": wavs.to(self.device), "mask": masks.to(self.device)})
        w = np.asarray(weights)
        out = {}
        for axis in AUDIOBOX_AXES:
            t = self.model.target_transform[axis]
            values = preds[axis].float().cpu().numpy() * t["std"] + t["mean"]
            out[axis] = float((values * w).sum() / w.sum())
        return out

    def score(self, candidates: Sequence[Candidate]) -> list[RewardScore]:
        out = []
        for c in candidates:
            axes = self.axis_scores(c.audio)
            out.append(RewardScore(float(np.mean([axes[a] for a in self.axes])), axes))
        return out


def load_audiobox(path: str | None, device: str, axes: Sequence[str]) -> AudioboxAesthetics:
    """The model from local weights only: the released ``checkpoint.pt`` (``state_dict``,
    ``model_cfg``, ``target_transform``) or a ``save_pretrained`` folder; loaded strictly."""
    import os

    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"rewards.audiobox_weights={path!r} does not exist (weights are never downloaded)")
    try:
        from audiobox_aesthetics.model.aes import AesMultiOutput
    except ImportError as e:
        raise ImportError("audiobox_aesthetics needs its model code: pip install --no-deps audiobox_aesthetics") from e
    import torch

    from stages.aesthetic import sha256_file

    if os.path.isdir(path):
        for required in ("config.json", "model.safetensors"):
            if not os.path.isfile(os.path.join(path, required)):
                raise FileNotFoundError(f"rewards.audiobox_weights: {path} has no {required}")
        model = AesMultiOutput.from_pretrained(path, local_files_only=True)
        version = f"sha256:{sha256_file(os.path.join(path, 'model.safetensors'))[:8]}"
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        keys = ("proj_num_layer", "proj_ln", "proj_act_fn", "proj_dropout", "nth_layer", "use_weighted_layer_sum",
                "precision", "normalize_embed", "output_dim")  # fmt: skip
        model = AesMultiOutput(**{k: ckpt["model_cfg"][k] for k in keys}, target_transform=ckpt["target_transform"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
        model.load_state_dict(state, strict=True)
        version = f"sha256:{sha256_file(path)[:8]}"
    return AudioboxAesthetics(model, device, version, axes)


# --- video ------------------------------------------------------------------------------------------


class FrameQuality:
    """image_quality / laion_aesthetic: an aesthetic-filter backend, mean over the frames at ``positions``."""

    modality = "video"

    def __init__(self, name: str, backend: Any, positions: Sequence[float]) -> None:
        self.name, self.backend, self.positions = name, backend, tuple(positions)
        self.version = f"{name}/{backend.backend_id}"
        self.resolution = RESOLUTION[name]

    def score(self, candidates: Sequence[Candidate]) -> list[RewardScore]:
        out = []
        for c in candidates:
            scores = np.asarray(self.backend.score(_at_positions(c.frames, self.positions)), np.float64)
            out.append(RewardScore(float(scores.mean()), {"min": float(scores.min())}))
        return out


MOTION_VERSION = 1
MIN_FLOW = 1e-6  # floor so that a frozen clip has a finite (very negative) reward


def motion_reward(flow: float, band: tuple[float, float]) -> float:
    """``-|log10(m / clip(m, lo, hi))|``: 0 inside the band, minus decades outside it."""
    m = max(flow, MIN_FLOW)
    return 0.0 - abs(math.log10(m / min(max(m, band[0]), band[1])))  # 0.0 -: no -0.0 in the ledger


class OpticalFlowMotion:
    """optical_flow_motion (module docstring) on a motion-filter flow backend."""

    name, modality = "optical_flow_motion", "video"
    resolution = RESOLUTION[name]

    def __init__(self, backend: Any, band: tuple[float, float], moving_min_flow: float = 0.01) -> None:
        self.backend, self.band, self.moving_min_flow = backend, band, moving_min_flow
        self.version = f"optical_flow_motion/v{MOTION_VERSION}+{backend.backend_id}"

    def score(self, candidates: Sequence[Candidate]) -> list[RewardScore]:
        from stages.motion import motion_scores

        out = []
        for c in candidates:
            scores = motion_scores(self.backend, c.frames, c.frame_times_s, self.moving_min_flow)
            value = motion_reward(scores.flow_mean, self.band)
            out.append(RewardScore(value, {"flow_mean": scores.flow_mean, "moving_fraction": scores.moving_fraction,
                                           "num_pairs": scores.num_pairs}))  # fmt: skip
        return out


# --- semantic (ImageBind) -----------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ImageBindSemantic:
    """Text, frame and audio-window embeddings from one ImageBind-shaped module (``{"text": tokens}``,
    ``{"vision": ...}``, ``{"audio": ...}`` -> embeddings), with ``tokenize(texts) -> (N, 77)``."""

    def __init__(self, embedder: Any, tokenize: Callable[[list[str]], Any], num_frames: int) -> None:
        self.embedder, self.tokenize, self.num_frames = embedder, tokenize, num_frames
        self.version = embedder.version

    def text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.embedder.model({"text": self.tokenize(list(texts)).to(self.embedder.device)})["text"]
        return _unit(out.float().cpu().numpy())

    def video(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            raise ValueError("the candidate has no frames")
        picked = frames[np.unique(np.linspace(0, len(frames) - 1, min(self.num_frames, len(frames))).round().astype(int))]
        return _unit(_unit(self.embedder.embed_vision(picked)).mean(axis=0))

    def audio(self, audio: np.ndarray) -> np.ndarray:
        from stages.av_sync import audio_windows, window_starts_s

        windows = audio_windows(audio, window_starts_s(len(audio) / AUDIO_RATE_HZ), AUDIO_RATE_HZ)
        return _unit(_unit(self.embedder.embed_audio(windows)).mean(axis=0))


class ImageBindSimilarity:
    """imagebind_text_video / imagebind_text_audio: cosine of the prompt to the frames / audio."""

    modality = "semantic"

    def __init__(self, semantic: ImageBindSemantic, target: str) -> None:
        self.semantic, self.target = semantic, target
        self.name = f"imagebind_text_{target}"
        self.resolution = RESOLUTION[self.name]
        self.version = f"{self.name}/{semantic.version}"

    def score(self, candidates: Sequence[Candidate]) -> list[RewardScore]:
        texts = self.semantic.text([c.prompt for c in candidates])
        out = []
        for c, t in zip(candidates, texts):
            media = self.semantic.video(c.frames) if self.target == "video" else self.semantic.audio(c.audio)
            out.append(RewardScore(float(t @ media)))
        return out


def load_imagebind_semantic(config: RewardsConfig) -> ImageBindSemantic:
    from pathlib import Path

    from stages.imagebind import load_imagebind

    embedder = load_imagebind(config.imagebind_weights, config.device)
    import imagebind
    from imagebind.models.multimodal_preprocessors import SimpleTokenizer

    bpe = Path(config.imagebind_bpe or Path(imagebind.__file__).parent / "bpe" / "bpe_simple_vocab_16e6.txt.gz")
    if not bpe.is_file():
        raise FileNotFoundError(f"ImageBind BPE vocabulary not found at {bpe}: set rewards.imagebind_bpe")
    return ImageBindSemantic(embedder, SimpleTokenizer(bpe_path=str(bpe)), config.semantic_num_frames)


# --- sync ---------------------------------------------------------------------------------------------


class SyncReward:
    """av_align / javisscore: a ``stages.av_sync`` scorer."""

    modality: ClassVar[str] = "sync"

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.name, self.version = scorer, scorer.name, scorer.version
        self.resolution = RESOLUTION[scorer.name]

    def score(self, candidates: Sequence[Candidate]) -> list[RewardScore]:
        out = []
        for c in candidates:
            parts = self.scorer.score_parts(c.frames, c.audio)
            details = {k: v for k, v in dataclasses.asdict(parts).items() if k != "score" and v is not None}
            out.append(RewardScore(float(parts.score), details))
        return out


# --- building the configured rewards --------------------------------------------------------------------


def build_rewards(config: RewardsConfig, semantic: ImageBindSemantic | None = None) -> list[Reward]:
    """The configured rewards, in modality order; every model is loaded once. ``semantic``: a
    ready ImageBind (tests); else loaded from ``rewards.imagebind_weights`` when needed."""
    from stages import aesthetic, motion
    from stages.av_sync import AvAlign, JavisScore

    rewards: list[Reward] = []
    for name in config.backends:
        if name == "audio_signal_quality":
            rewards.append(AudioSignalQuality())
        elif name == "audiobox_aesthetics":
            rewards.append(load_audiobox(config.audiobox_weights, config.device, config.audiobox_axes))
        elif name == "image_quality":
            rewards.append(FrameQuality(name, aesthetic.ImageQualityScore(), config.positions))
        elif name == "laion_aesthetic":
            head = aesthetic.ClipLaionAesthetic(config.clip_model_dir, config.laion_mlp_weights, config.device)
            rewards.append(FrameQuality(name, head, config.positions))
        elif name == "optical_flow_motion":
            flow = motion.make_backend(motion.MotionConfig(backend=config.flow_backend, unimatch_repo=config.unimatch_repo,
                                                           unimatch_weights=config.unimatch_weights,
                                                           device=config.device))  # fmt: skip
            rewards.append(OpticalFlowMotion(flow, config.motion_band))
        elif name in ("imagebind_text_video", "imagebind_text_audio"):
            semantic = semantic or load_imagebind_semantic(config)
            rewards.append(ImageBindSimilarity(semantic, name.rsplit("_", 1)[1]))
        elif name == "av_align":
            rewards.append(SyncReward(AvAlign(config.fps)))
        elif name == "javisscore":
            embedder = semantic.embedder if semantic else None
            if embedder is None:
                from stages.imagebind import load_imagebind

                embedder = load_imagebind(config.imagebind_weights, config.device)
            rewards.append(SyncReward(JavisScore(embedder, config.fps)))
    return rewards


def load_candidate(path: str, candidate_id: str, prompt: str, config: RewardsConfig) -> Candidate:
    """Decode a written candidate MP4 once: frames at ``config.fps`` from t = 0, 16 kHz mono audio."""
    from stages.av_sync import load_clip_for_sync

    frames, audio = load_clip_for_sync(path, config.fps, AUDIO_RATE_HZ, config.max_side)
    return Candidate(candidate_id, prompt, frames, config.fps, audio)
