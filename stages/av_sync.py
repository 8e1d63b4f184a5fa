"""av_sync: reject clips whose sound does not go with their picture (JavisScore / AV-Align).

Input: the shared analysis pack (``decoded``): frames sampled every ``1 / fps`` seconds from
t = 0 (the need named ``av_sync``, RGB) and the clip's 16 kHz mono audio. No extra decode.

Backends (``av_sync.backend``), each a :class:`SyncScorer` scoring ``(frames, audio)`` that cover
the same span:

- ``javisscore`` (production; JavisDiT appendix D.4.1). The clip is cut into windows of
  ``WINDOW_S = 2`` s with 1.5 s overlap, i.e. window ``k`` starts at ``k * HOP_S`` (0.5 s) and the
  last window ends at or before the clip's end; a clip shorter than 2 s is one window over all of
  it. A frame belongs to window ``k`` when its time ``i / fps`` lies in ``[start, start + 2 s)``.
  Every frame is embedded with ImageBind's vision encoder, each window's audio (zero-padded to
  2 s) with its audio encoder; the window's score is the mean of the ``ceil(0.4 * n)`` lowest
  cosine similarities between its ``n`` frames and its audio (at least one frame), and the
  clip's score is the mean over windows. Range [-1, 1]; the paper's generated clips score
  about 0.15.
- ``av_align`` (CPU; Yariv et al. 2023, "Diverse and Aligned Audio-to-Video Generation via
  Text-to-Video Model Adaptation"), from its definition: audio peaks are onsets of a
  librosa-style onset-strength envelope (log-mel spectral flux, librosa's peak picking, computed
  here with numpy/scipy on the audio resampled to librosa's 22.05 kHz); video peaks are strict local maxima of the mean optical-flow
  magnitude between consecutive frames (OpenCV Farneback, the motion stage's helper). An audio
  peak is matched when a video peak lies strictly within one frame period (``1 / fps``) of it;
  score = matched / (|A| + |V| - matched) (0 when there are no peaks at all). As in the
  original code, matches are counted per audio peak, so two audio peaks near one video peak both
  count and the "IoU" can exceed 1 (seen on the demo's sine-and-testsrc clips); kept as defined so
  scores compare with the paper's AV-Align figures.

Output columns: ``av_sync_score``, ``av_sync_backend`` (name/version with the weights hash),
``av_sync_num_windows`` (javisscore), ``av_sync_num_audio_peaks`` / ``av_sync_num_video_peaks``
(av_align). Reason code: ``out_of_sync`` (``av_sync_score < min_score``). A clip without audio
raises (the row is ``failed``): the sound check should have rejected it first. The stage is off
in the ``default`` preset until thresholds are calibrated with ``javis sync-eval``; the
``paper`` preset turns it on. Calibration and costs: ``docs/filters/av_sync.md``.

(Over the 400-line guide: two metrics, each with the signal processing its paper specifies,
share the stage, the ``SyncScorer`` API that sync-eval and augment use, and the file decoder;
ImageBind's preprocessing and loader already live apart in ``stages/imagebind.py``.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, Rejection, passed
from stages.decode import AUDIO_RATE_HZ, DecodedClip, FrameNeed, decode_clip

BACKENDS = ("av_align", "javisscore")
REASON = "out_of_sync"
# thresholds used when av_sync.min_score is unset: placeholders until calibrated by sync-eval
# (javisscore: the paper's generated clips score ~0.15, real ones more; av_align: an IoU)
DEFAULT_MIN_SCORE = {"av_align": 0.05, "javisscore": 0.1}

WINDOW_S = 2.0  # D.4.1: 2 s windows (ImageBind's audio clip length) ...
HOP_S = 0.5  # ... with 1.5 s overlap
LOW_FRACTION = 0.4  # D.4.1: mean of the 40 % least similar frames of a window


@dataclasses.dataclass(frozen=True)
class AvSyncConfig:
    """The ``av_sync`` config section."""

    enabled: bool = False  # off until calibrated (docs/filters/av_sync.md); on in the paper preset
    backend: str = "av_align"  # one of BACKENDS; "javisscore" is the production (GPU) backend
    min_score: float | None = None  # reject below this; None: DEFAULT_MIN_SCORE[backend]
    fps: float = 8.0  # frames per second sampled for scoring (AV-Align's match window is 1 / fps)
    max_side: int = 224  # frames downscaled so the longer side is at most this (ImageBind: 224)
    imagebind_weights: str | None = None  # javisscore: local imagebind_huge.pth
    batch_frames: int = 32  # javisscore: frames (or audio windows) per forward pass
    device: str = "cuda"  # javisscore: torch device

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"av_sync.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 1 <= self.fps <= 60:
            raise ValueError("av_sync.fps must be in [1, 60]")
        if self.max_side < 32:
            raise ValueError("av_sync.max_side must be >= 32")
        if self.batch_frames < 1:
            raise ValueError("av_sync.batch_frames must be >= 1")
        if self.min_score is not None and not -1 <= self.min_score <= 1:
            raise ValueError("av_sync.min_score must be in [-1, 1]")
        if self.backend == "javisscore" and not self.imagebind_weights:
            raise ValueError("av_sync.imagebind_weights must be set when av_sync.backend is 'javisscore'")

    @property
    def threshold(self) -> float:
        return DEFAULT_MIN_SCORE[self.backend] if self.min_score is None else self.min_score


@dataclasses.dataclass(frozen=True)
class SyncScore:
    """One clip's score and the counts behind it (None where the backend has no such count)."""

    score: float
    num_windows: int | None = None
    num_audio_peaks: int | None = None
    num_video_peaks: int | None = None


class SyncScorer(Protocol):
    """Scores how well ``audio`` goes with ``frames``; higher is more in sync."""

    name: str  # "javisscore" | "av_align"
    version: str  # name/version, with the weights hash for production
    fps: float  # frame rate it wants
    sample_rate: int  # audio rate it wants

    def score(self, frames: np.ndarray, audio: np.ndarray) -> float:
        """frames (T, H, W, 3) uint8 RGB at ``fps``; audio (S,) float32 mono at ``sample_rate``."""
        ...

    def score_parts(self, frames: np.ndarray, audio: np.ndarray) -> SyncScore: ...


# --- JavisScore: the window maths (pure) ---------------------------------------------------------


def window_starts_s(duration_s: float) -> np.ndarray:
    """Window starts 0, 0.5, 1.0, ... whose 2 s window ends within the clip; one window at 0
    when the clip is shorter than 2 s. (1e-9 s of slack absorbs float error in durations.)"""
    if duration_s < WINDOW_S:
        return np.zeros(1)
    num = int(math.floor((duration_s - WINDOW_S) / HOP_S + 1e-9)) + 1
    return np.arange(num) * HOP_S


def window_frame_indices(start_s: float, num_frames: int, fps: float) -> np.ndarray:
    """Indices of the frames (time ``i / fps``) in ``[start_s, start_s + WINDOW_S)``."""
    times = np.arange(num_frames) / fps
    return np.flatnonzero((times >= start_s - 1e-9) & (times < start_s + WINDOW_S - 1e-9))


def num_low_frames(num_frames: int) -> int:
    """How many of a window's frames count: the 40 % least similar, rounded up, at least 1."""
    return max(1, math.ceil(LOW_FRACTION * num_frames - 1e-9))


def window_score(similarities: np.ndarray) -> float:
    """Mean of the ``num_low_frames`` lowest frame-audio cosine similarities of one window."""
    low = np.sort(np.asarray(similarities, dtype=np.float64))[: num_low_frames(len(similarities))]
    return float(low.mean())


def audio_windows(audio: np.ndarray, starts_s: np.ndarray, sample_rate: int) -> np.ndarray:
    """(W, WINDOW_S * sample_rate) float32: each window's audio, zero-padded past the end."""
    length = int(round(WINDOW_S * sample_rate))
    out = np.zeros((len(starts_s), length), np.float32)
    for w, start in enumerate(starts_s):
        piece = audio[int(round(start * sample_rate)) :][:length]
        out[w, : len(piece)] = piece
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def javisscore_from_embeddings(vision: np.ndarray, audio: np.ndarray, window_frames: list[np.ndarray]) -> float:
    """JavisScore from frame embeddings (T, D), window audio embeddings (W, D) and each window's
    frame indices: cosine of every frame to its window's audio, 40 % lowest, mean over windows."""
    vision, audio = _unit(np.asarray(vision, np.float64)), _unit(np.asarray(audio, np.float64))
    scores = [window_score(vision[idx] @ audio[w]) for w, idx in enumerate(window_frames) if len(idx)]
    if not scores:
        raise ValueError("no window holds a frame: too few frames for the clip's length")
    return float(np.mean(scores))


class SyncEmbedder(Protocol):
    """What JavisScore needs from ImageBind (or a tiny stand-in in tests)."""

    version: str

    def embed_vision(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, D)."""
        ...

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """(W, S) float32 16 kHz audio windows -> (W, D)."""
        ...


class JavisScore:
    """JavisScore (D.4.1) on any :class:`SyncEmbedder`; see the module docstring."""

    name = "javisscore"
    sample_rate = AUDIO_RATE_HZ

    def __init__(self, embedder: SyncEmbedder, fps: float, batch_frames: int = 32) -> None:
        self.embedder = embedder
        self.fps = fps
        self.batch_frames = batch_frames
        self.version = f"javisscore/{embedder.version}"

    def score_parts(self, frames: np.ndarray, audio: np.ndarray) -> SyncScore:
        duration_s = min(len(audio) / self.sample_rate, len(frames) / self.fps)
        starts = window_starts_s(duration_s)
        windows = [window_frame_indices(s, len(frames), self.fps) for s in starts]
        used = np.unique(np.concatenate(windows)) if windows else np.zeros(0, int)
        vision = np.zeros((len(frames), 0))
        for i in range(0, len(used), self.batch_frames):
            chunk = used[i : i + self.batch_frames]
            emb = np.asarray(self.embedder.embed_vision(frames[chunk]), np.float64)
            if vision.shape[1] == 0:
                vision = np.zeros((len(frames), emb.shape[1]))
            vision[chunk] = emb
        clips = audio_windows(audio, starts, self.sample_rate)
        audio_emb = np.concatenate(
            [
                self.embedder.embed_audio(clips[i : i + self.batch_frames])
                for i in range(0, len(clips), self.batch_frames)
            ]
        )
        return SyncScore(javisscore_from_embeddings(vision, audio_emb, windows), num_windows=len(starts))

    def score(self, frames: np.ndarray, audio: np.ndarray) -> float:
        return self.score_parts(frames, audio).score


# --- AV-Align (pure numpy / scipy, plus OpenCV flow) ----------------------------------------------

ONSET_RATE_HZ = 22_050  # AV-Align loads audio with librosa's default rate; its peak-picking windows
# (30 ms, 100 ms) round to whole frames of this rate, so the audio is resampled to it first
ONSET_N_FFT = 2048  # librosa's onset_strength defaults (n_fft, hop, 128 mel bands)
ONSET_HOP = 512
ONSET_N_MELS = 128


def _hz_to_mel(f: np.ndarray) -> np.ndarray:  # Slaney's mel scale, librosa's default (htk=False)
    f = np.asarray(f, np.float64)
    linear = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney-normalised triangular filters, as librosa.filters.mel."""
    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / np.diff(mel_hz)[:-1, None]
    upper = ramps[2:] / np.diff(mel_hz)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


def onset_strength(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """librosa.onset.onset_strength: mean over mel bands of the positive first difference of the
    log-power (dB, 80 dB range) mel spectrogram, centred frames, aligned to frame times."""
    y = np.pad(np.asarray(audio, np.float64), ONSET_N_FFT // 2, mode="constant")
    num = 1 + (len(y) - ONSET_N_FFT) // ONSET_HOP if len(y) >= ONSET_N_FFT else 0
    if num < 2:
        return np.zeros(max(num, 0))
    idx = np.arange(ONSET_N_FFT)[None, :] + ONSET_HOP * np.arange(num)[:, None]
    window = np.hanning(ONSET_N_FFT + 1)[:-1]  # periodic Hann, as scipy.signal.get_window
    power = np.abs(np.fft.rfft(y[idx] * window, axis=1)) ** 2  # (frames, bins)
    mel = power @ mel_filterbank(sample_rate, ONSET_N_FFT, ONSET_N_MELS).T  # (frames, mels)
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    flux = np.maximum(0.0, db[1:] - db[:-1]).mean(axis=1)
    # librosa pads lag (1) frame at the front plus n_fft // (2 hop) for centring, then trims to length
    pad = 1 + ONSET_N_FFT // (2 * ONSET_HOP)
    return np.concatenate([np.zeros(pad), flux])[:num]


def peak_pick(
    env: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float, wait: int
) -> np.ndarray:
    """librosa.util.peak_pick: x[n] is the max of x[n-pre_max : n+post_max], exceeds the mean of
    x[n-pre_avg : n+post_avg] by delta, and comes more than ``wait`` frames after the last peak."""
    peaks, last = [], -np.inf
    for n in range(len(env)):
        lo_m, hi_m = max(0, n - pre_max), min(len(env), n + post_max)
        lo_a, hi_a = max(0, n - pre_avg), min(len(env), n + post_avg)
        if env[n] == env[lo_m:hi_m].max() and env[n] >= env[lo_a:hi_a].mean() + delta and n > last + wait:
            peaks.append(n)
            last = n
    return np.asarray(peaks, dtype=np.int64)


def audio_peak_times_s(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """librosa.onset.onset_detect (default parameters, normalised envelope) on the audio
    resampled to ONSET_RATE_HZ -> onset times in s."""
    from scipy.signal import resample_poly

    if sample_rate != ONSET_RATE_HZ:
        g = math.gcd(ONSET_RATE_HZ, sample_rate)
        audio = resample_poly(np.asarray(audio, np.float64), ONSET_RATE_HZ // g, sample_rate // g)
    sample_rate = ONSET_RATE_HZ
    env = onset_strength(audio, sample_rate)
    if env.size == 0 or env.max() - env.min() <= 0:
        return np.zeros(0)
    env = (env - env.min()) / (env.max() - env.min())
    per_s = sample_rate / ONSET_HOP
    peaks = peak_pick(
        env,
        pre_max=int(0.03 * per_s),
        post_max=int(0.0 * per_s) + 1,
        pre_avg=int(0.10 * per_s),
        post_avg=int(0.10 * per_s) + 1,
        delta=0.07,
        wait=int(0.03 * per_s),
    )
    return peaks * ONSET_HOP / sample_rate


def video_peak_times_s(flow_means: np.ndarray, fps: float) -> np.ndarray:
    """Strict local maxima of the flow trajectory, at ``i / fps`` (AV-Align's find_local_max)."""
    f = np.asarray(flow_means, np.float64)
    if len(f) < 3:
        return np.zeros(0)
    inner = np.flatnonzero((f[1:-1] > f[:-2]) & (f[1:-1] > f[2:])) + 1
    return inner / fps


def av_align_iou(audio_peaks_s: np.ndarray, video_peaks_s: np.ndarray, fps: float) -> float:
    """Matched audio peaks (a video peak strictly within 1 / fps) over |A| + |V| - matched; per
    audio peak, as the original, so it may exceed 1 (module docstring)."""
    video = np.asarray(video_peaks_s, np.float64)
    matched = sum(1 for a in audio_peaks_s if video.size and np.any(np.abs(video - a) < 1.0 / fps))
    union = len(audio_peaks_s) + len(video) - matched
    return matched / union if union else 0.0


class AvAlign:
    """AV-Align (module docstring) on OpenCV Farneback flow; no weights."""

    name = "av_align"
    sample_rate = AUDIO_RATE_HZ

    def __init__(self, fps: float) -> None:
        from stages.motion import FarnebackFlow

        self.fps = fps
        self.flow = FarnebackFlow()
        self.version = f"av_align/{self.flow.backend_id}"

    def flow_trajectory(self, frames: np.ndarray) -> np.ndarray:
        """Mean flow magnitude per frame: pair (i-1, i) for frame i, frame 0 repeats pair (0, 1)."""
        if len(frames) < 2:
            return np.zeros(len(frames))
        magnitudes = self.flow.flow_magnitudes(frames[:-1], frames[1:]).mean(axis=(1, 2))
        return np.concatenate([magnitudes[:1], magnitudes])

    def score_parts(self, frames: np.ndarray, audio: np.ndarray) -> SyncScore:
        video = video_peak_times_s(self.flow_trajectory(frames), self.fps)
        audio_peaks = audio_peak_times_s(audio, self.sample_rate)
        return SyncScore(av_align_iou(audio_peaks, video, self.fps), None, len(audio_peaks), len(video))

    def score(self, frames: np.ndarray, audio: np.ndarray) -> float:
        return self.score_parts(frames, audio).score


# --- making scorers, decoding files ---------------------------------------------------------------


def make_scorer(config: AvSyncConfig) -> SyncScorer:
    if config.backend == "av_align":
        return AvAlign(config.fps)
    from stages.imagebind import load_imagebind

    embedder = load_imagebind(config.imagebind_weights, config.device)
    return JavisScore(embedder, config.fps, config.batch_frames)


def load_clip_for_sync(
    path: str | Path, fps: float, sample_rate: int, max_side: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """Decode an encoded clip file into (frames (T, H, W, 3) uint8 RGB at ``fps`` from t = 0,
    audio (S,) float32 mono at ``sample_rate``) for a scorer; one pass per stream (PyAV)."""
    import av

    if sample_rate != AUDIO_RATE_HZ:
        raise ValueError(f"the decoder resamples to {AUDIO_RATE_HZ} Hz, not {sample_rate}")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        duration_s = float(stream.duration * stream.time_base) if stream.duration else None
        if duration_s is None and container.duration:
            duration_s = container.duration / 1_000_000
    if not duration_s:
        raise ValueError(f"{path}: unknown duration")
    need = FrameNeed(name="av_sync", fps=fps, max_side=max_side)
    clip = decode_clip(str(path), [need], audio=True, duration_s=duration_s)
    if clip.audio is None:
        raise ValueError(f"{path}: no audio stream")
    return clip.frames["av_sync"], clip.audio


# --- the decision and the stage ------------------------------------------------------------------


def decide(config: AvSyncConfig, scores: Mapping[str, Any]) -> Rejection | None:
    """The decision from stored score columns and the config's threshold. Pure: used by
    ``AvSync.process`` and by ``javis refilter``."""
    value = scores.get(Col.AV_SYNC_SCORE)
    if value is None:
        raise ValueError(f"row has no {Col.AV_SYNC_SCORE} score: the av_sync stage never scored it")
    if value < config.threshold:
        return Rejection(
            REASON,
            metric=Col.AV_SYNC_SCORE,
            value=float(value),
            threshold=config.threshold,
            detail=f"{scores.get(Col.AV_SYNC_BACKEND, config.backend)} score {value:.4g} < {config.threshold:g}",
        )
    return None


class AvSync:
    """See the module docstring. Input: ``decoded`` (frames named ``av_sync`` and audio); output:
    ``av_sync_score``, ``av_sync_backend`` and the counts; reason: ``out_of_sync``."""

    name: ClassVar[str] = "av_sync"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = (REASON,)
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED,)
    produces: ClassVar[tuple[str, ...]] = (
        Col.AV_SYNC_SCORE,
        Col.AV_SYNC_BACKEND,
        Col.AV_SYNC_NUM_WINDOWS,
        Col.AV_SYNC_NUM_AUDIO_PEAKS,
        Col.AV_SYNC_NUM_VIDEO_PEAKS,
    )

    @staticmethod
    def frame_need(config: AvSyncConfig) -> FrameNeed | None:
        return FrameNeed(name=AvSync.name, fps=config.fps, max_side=config.max_side) if config.enabled else None

    @staticmethod
    def needs_audio(config: AvSyncConfig) -> bool:
        return config.enabled

    def __init__(self, config: AvSyncConfig, scorer: SyncScorer | None = None) -> None:
        """``scorer``: a ready scorer (tests, or a caller sharing one model); else built from config."""
        self.config = config
        self.scorer = scorer if scorer is not None else make_scorer(config)

    def process(self, row: dict[str, Any]) -> Outcome:
        clip = DecodedClip.from_row(row)
        if self.name not in clip.frames:
            raise ValueError(f"the analysis pack has no {self.name!r} frames: scene_cut's pack plan lacks its need")
        if clip.audio is None or len(clip.audio) == 0:
            raise ValueError("the clip has no decoded audio: the pack plan lacks audio or the sound check did not run")
        parts = self.scorer.score_parts(clip.frames[self.name], clip.audio)
        columns = {
            Col.AV_SYNC_SCORE: parts.score,
            Col.AV_SYNC_BACKEND: self.scorer.version,
            Col.AV_SYNC_NUM_WINDOWS: parts.num_windows,
            Col.AV_SYNC_NUM_AUDIO_PEAKS: parts.num_audio_peaks,
            Col.AV_SYNC_NUM_VIDEO_PEAKS: parts.num_video_peaks,
        }
        rejection = decide(self.config, columns)
        return passed(**columns) if rejection is None else Outcome(columns=columns, rejection=rejection)
