"""Sound-producing intervals of a clip: separate its audio into sources, then find where each
source is active. Precomputed once per clip; the audio operations reuse the result
(``ClipContext.sources``, ``ClipContext.active``, and other clips' ``donor_sources``).

**Separation backends** (all return sources with the clip's own shape, float32 ``(C, S)``):

- ``hpss`` (default, CPU): harmonic/percussive separation by median filtering the STFT
  magnitude (Fitzgerald, DAFx 2010). Sustained partials are smooth along time, onsets along
  frequency, so a median along time keeps the first and a median along frequency the second.
- ``nmf`` (CPU): non-negative matrix factorisation of the STFT magnitude ``V ~ W H`` with ``k``
  components (Lee & Seung multiplicative updates, Euclidean or KL, fixed seed), one
  source per component, ordered from low to high spectral centroid.
- ``audiosep`` (production, GPU): text-queried separation with AudioSep (Audio-AGI/AudioSep),
  one source per query (sound names, e.g. from the audio caption). Its sources need not sum to
  the mixture.

The CPU backends build masks from the magnitude averaged over channels and apply them, Wiener
style (``M_i = A_i^p / sum_j A_j^p``), to every channel's complex STFT, so the masks sum to one
and the sources sum back to the input up to the float32 rounding of the STFT round trip.

**Activity.** A source's level is its frame-wise RMS over all channels, in dBFS (full scale
= RMS 1), with a ``activity_window_s`` window centred every ``activity_hop_s``. Frame ``i``
(centre ``i * hop``) is active when its level is at least the threshold:

- ``relative`` (default): ``max(peak + activity_relative_db, activity_floor_dbfs)``, where
  ``peak`` is the source's own loudest frame; the floor keeps a near-silent source (e.g. the
  percussive part of a pure tone) from being all "active" at the level of rounding noise;
- ``absolute``: ``activity_absolute_dbfs``.

A run of active frames ``a..b`` becomes ``[(a - 1/2) hop, (b + 1/2) hop)`` clipped to the clip;
gaps shorter than ``min_gap_s`` are merged, then intervals shorter than ``min_active_s``
dropped. At the low default threshold any overlap of the window with a sound counts, so a
sharp onset or offset is found up to ``window / 2 + hop`` (35 ms by default) early or late.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from augment.context import Interval, Source

BACKENDS = ("hpss", "nmf", "audiosep")
THRESHOLD_MODES = ("relative", "absolute")
NMF_DIVERGENCES = ("euclidean", "kl")
AUDIOSEP_RATE_HZ = 32000  # AudioSep's models are trained on 32 kHz mono (its pipeline.py)
EPS = 1e-10


@dataclasses.dataclass(frozen=True)
class SeparationConfig:
    """Source separation and activity detection (module docstring)."""

    backend: str = "hpss"  # one of BACKENDS
    stft_window_s: float = 0.064  # rounded to a power-of-two FFT size (1024 at 16 kHz, 4096 at 48 kHz)
    mask_power: float = 2.0  # Wiener-style soft masks A_i^p / sum A_j^p: 2 = power spectra; larger is harder
    hpss_harmonic_s: float = 0.2  # median along time: partials steadier than this are "harmonic"
    hpss_percussive_hz: float = 250.0  # median along frequency: bursts broader than this are "percussive"
    nmf_components: int = 4  # k: one source per component
    nmf_iterations: int = 100  # multiplicative updates (the divergence decreases monotonically)
    nmf_divergence: str = "euclidean"  # one of NMF_DIVERGENCES: "kl" is the audio classic, ~10x slower
    nmf_seed: int = 0  # the random initialisation of W and H: fixed, so separation is deterministic
    activity_window_s: float = 0.05  # RMS window
    activity_hop_s: float = 0.01  # RMS hop: the time resolution of the intervals
    activity_mode: str = "relative"  # one of THRESHOLD_MODES
    activity_relative_db: float = -30.0  # relative mode: dB below the source's own peak frame
    activity_floor_dbfs: float = -60.0  # relative mode: never active below this level
    activity_absolute_dbfs: float = -50.0  # absolute mode: the threshold
    min_gap_s: float = 0.2  # shorter silences inside a sound do not split it
    min_active_s: float = 0.1  # shorter intervals (after merging) are dropped
    audiosep_repo: str | None = None  # local checkout of github.com/Audio-AGI/AudioSep
    audiosep_config: str | None = None  # its config yaml; None: <repo>/config/audiosep_base.yaml
    audiosep_checkpoint: str | None = None  # the separation checkpoint (e.g. audiosep_base_4M_steps.ckpt)
    audiosep_clap_checkpoint: str | None = None  # the CLAP query encoder (music_speech_audioset_epoch_15_esc_89.98.pt)
    device: str = "cuda"  # audiosep: torch device

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"separation.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.nmf_divergence not in NMF_DIVERGENCES:
            raise ValueError(f"separation.nmf_divergence must be one of {NMF_DIVERGENCES}, got {self.nmf_divergence!r}")
        if self.activity_mode not in THRESHOLD_MODES:
            raise ValueError(f"separation.activity_mode must be one of {THRESHOLD_MODES}, got {self.activity_mode!r}")
        if not 0.004 <= self.stft_window_s <= 0.5:
            raise ValueError("separation.stft_window_s must be in [0.004, 0.5] s")
        if not self.mask_power > 0:
            raise ValueError("separation.mask_power must be > 0")
        if self.hpss_harmonic_s <= 0 or self.hpss_percussive_hz <= 0:
            raise ValueError("separation.hpss_harmonic_s and separation.hpss_percussive_hz must be > 0")
        if self.nmf_components < 1 or self.nmf_iterations < 1:
            raise ValueError("separation.nmf_components and separation.nmf_iterations must be >= 1")
        if not 0 < self.activity_hop_s <= self.activity_window_s:
            raise ValueError("separation.activity_hop_s must be in (0, activity_window_s]")
        if self.activity_relative_db >= 0:
            raise ValueError("separation.activity_relative_db must be < 0 (dB below the peak)")
        if self.min_gap_s < 0 or self.min_active_s < 0:
            raise ValueError("separation.min_gap_s and separation.min_active_s must be >= 0")


# --- STFT / ISTFT: Hann window, 75 % overlap, frames centred at multiples of the hop -------------


def fft_size(rate_hz: int, window_s: float) -> int:
    """The power of two nearest to ``window_s`` seconds of samples (at least 16)."""
    return max(16, 2 ** round(math.log2(window_s * rate_hz)))


def _hann(n_fft: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic


def stft(audio: np.ndarray, n_fft: int) -> np.ndarray:
    """(C, S) float -> (C, F, N) complex64, ``F = n_fft/2 + 1``, hop ``n_fft/4``; frame ``i`` is
    centred on sample ``i * hop`` (zero padding), and ``N = 1 + ceil(S / hop)`` frames cover it all."""
    hop = n_fft // 4
    num_channels, num_samples = audio.shape
    num_frames = 1 + -(-num_samples // hop)
    padded = np.zeros((num_channels, (num_frames - 1) * hop + n_fft), dtype=np.float32)
    padded[:, n_fft // 2 : n_fft // 2 + num_samples] = audio
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop][:, :num_frames]
    return np.fft.rfft(frames * _hann(n_fft), axis=-1).transpose(0, 2, 1)  # (C, F, N)


def istft(spec: np.ndarray, n_fft: int, num_samples: int) -> np.ndarray:
    """Inverse of :func:`stft` (weighted overlap-add, divided by the summed squared window):
    exact up to float rounding for an unmodified spectrogram. -> (C, num_samples) float32."""
    hop, window = n_fft // 4, _hann(n_fft)
    num_channels, _, num_frames = spec.shape
    frames = np.fft.irfft(spec.transpose(0, 2, 1), n=n_fft, axis=-1).astype(np.float32) * window  # (C, N, n_fft)
    blocks = frames.reshape(num_channels, num_frames, 4, hop)  # a frame spans 4 hops
    out = np.zeros((num_channels, num_frames + 3, hop), dtype=np.float32)
    norm = np.zeros((num_frames + 3, hop), dtype=np.float32)
    for k in range(4):  # block k of frame i lands on hop slot i + k
        out[:, k : k + num_frames] += blocks[:, :, k]
        norm[k : k + num_frames] += (window.reshape(4, hop)[k] ** 2)[None]
    start = n_fft // 2
    out = out.reshape(num_channels, -1)[:, start : start + num_samples]
    return out / np.maximum(norm.reshape(-1)[start : start + num_samples], EPS)


# --- the separation maths ------------------------------------------------------------------------


def median_filter(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Running median of odd ``size`` along ``axis`` of a 2-D array, edges reflected. numpy only
    (scipy is not a dependency); processed in row blocks so the window copy stays ~64 MB."""
    if size <= 1:
        return values.copy()
    moved = np.moveaxis(values, axis, -1)
    half = size // 2
    padded = np.pad(moved, [(0, 0), (half, half)], mode="reflect" if moved.shape[-1] > half else "edge")
    out = np.empty_like(moved)
    rows_per_block = max(1, (16 << 20) // (size * moved.shape[-1]))
    for start in range(0, moved.shape[0], rows_per_block):
        windows = np.lib.stride_tricks.sliding_window_view(padded[start : start + rows_per_block], size, axis=-1)
        # a partition to the middle element: np.median does the same plus a NaN scan, 4x slower
        out[start : start + rows_per_block] = np.partition(windows, half, axis=-1)[..., half]
    return np.moveaxis(out, -1, axis)


def soft_masks(estimates: Sequence[np.ndarray], power: float) -> list[np.ndarray]:
    """Wiener-style masks ``A_i^p / sum_j A_j^p``: non-negative and summing to one everywhere
    (where every estimate is zero the masks split evenly)."""
    powered = [np.power(np.maximum(a, 0), power) + EPS for a in estimates]
    total = np.sum(powered, axis=0)
    return [p / total for p in powered]


def hpss_masks(magnitude: np.ndarray, harmonic_frames: int, percussive_bins: int, power: float) -> list[np.ndarray]:
    """(F, N) magnitude -> [harmonic mask, percussive mask] (Fitzgerald 2010, soft masks).
    Kernel sizes are made odd so each median has a centre."""
    harmonic = median_filter(magnitude, harmonic_frames | 1, axis=1)  # smooth along time
    percussive = median_filter(magnitude, percussive_bins | 1, axis=0)  # smooth along frequency
    return soft_masks([harmonic, percussive], power)


def nmf(
    magnitude: np.ndarray, num_components: int, num_iterations: int, seed: int, divergence: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """``V ~ W H`` for (F, N) non-negative ``V``: W (F, k), H (k, N), by Lee & Seung's (2001)
    multiplicative updates, deterministic for a given seed. ``euclidean`` goes through the small
    Gram matrices (two passes over V per iteration: ~1 s per minute of 48 kHz audio); ``kl``
    needs the full ratio V / WH twice per iteration (~10x slower) but weighs quiet parts more."""
    if divergence not in NMF_DIVERGENCES:
        raise ValueError(f"divergence must be one of {NMF_DIVERGENCES}, got {divergence!r}")
    rng = np.random.default_rng(seed)
    v = magnitude.astype(np.float32)
    scale = float(np.sqrt(v.mean() / num_components)) + EPS
    w = rng.uniform(0.5, 1.5, (v.shape[0], num_components)).astype(np.float32) * scale
    h = rng.uniform(0.5, 1.5, (num_components, v.shape[1])).astype(np.float32) * scale
    for _ in range(num_iterations):
        if divergence == "kl":
            h *= (w.T @ (v / (w @ h + EPS))) / (w.sum(axis=0)[:, None] + EPS)
            w *= ((v / (w @ h + EPS)) @ h.T) / (h.sum(axis=1)[None, :] + EPS)
        else:
            h *= (w.T @ v) / ((w.T @ w) @ h + EPS)
            w *= (v @ h.T) / (w @ (h @ h.T) + EPS)
    return w, h


def nmf_masks(w: np.ndarray, h: np.ndarray, power: float) -> list[np.ndarray]:
    """One soft mask per component, ordered by the component's spectral centroid (low first),
    so ``nmf_0`` is the lowest-pitched source whatever the random initialisation."""
    centroids = (w * np.arange(w.shape[0])[:, None]).sum(axis=0) / (w.sum(axis=0) + EPS)
    order = np.argsort(centroids, kind="stable")
    return soft_masks([np.outer(w[:, i], h[i]) for i in order], power)


def masked_sources(audio: np.ndarray, rate_hz: int, config: SeparationConfig) -> list[tuple[str, np.ndarray]]:
    """The CPU backends: masks from the magnitude averaged over channels, applied to every channel."""
    n_fft = fft_size(rate_hz, config.stft_window_s)
    spec = stft(audio, n_fft)  # (C, F, N)
    magnitude = np.abs(spec).mean(axis=0)  # not |mean|: out-of-phase channels would cancel
    if config.backend == "hpss":
        hop_s, bin_hz = n_fft / 4 / rate_hz, rate_hz / n_fft
        harmonic_frames = max(1, round(config.hpss_harmonic_s / hop_s))
        percussive_bins = max(1, round(config.hpss_percussive_hz / bin_hz))
        names = ["harmonic", "percussive"]
        masks = hpss_masks(magnitude, harmonic_frames, percussive_bins, config.mask_power)
    else:
        w, h = nmf(magnitude, config.nmf_components, config.nmf_iterations, config.nmf_seed, config.nmf_divergence)
        names = [f"nmf_{i}" for i in range(config.nmf_components)]
        masks = nmf_masks(w, h, config.mask_power)
    return [(name, istft(spec * mask[None], n_fft, audio.shape[1])) for name, mask in zip(names, masks)]


# --- activity: frame RMS -> intervals ------------------------------------------------------------


def frame_rms_dbfs(audio: np.ndarray, rate_hz: int, window_s: float, hop_s: float) -> np.ndarray:
    """(C, S) -> (N,) RMS over all channels in dBFS of windows centred at ``i * hop_s``."""
    window, hop = max(1, round(window_s * rate_hz)), max(1, round(hop_s * rate_hz))
    power = np.mean(np.square(audio, dtype=np.float64), axis=0)
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    centres = np.arange(0, audio.shape[1], hop)
    starts = np.clip(centres - window // 2, 0, audio.shape[1])
    ends = np.clip(centres - window // 2 + window, 0, audio.shape[1])
    mean_power = (cumulative[ends] - cumulative[starts]) / window  # zeros beyond the clip's edges
    return 10 * np.log10(np.maximum(mean_power, EPS))


def merge_intervals(intervals: Sequence[Interval], min_gap_s: float = 0.0) -> list[Interval]:
    """Sorted union of ``intervals``, also joining any two separated by less than ``min_gap_s``."""
    merged: list[Interval] = []
    for item in sorted(intervals, key=lambda i: i.start_s):
        if merged and (item.start_s <= merged[-1].end_s or item.start_s - merged[-1].end_s < min_gap_s):
            merged[-1] = Interval(merged[-1].start_s, max(merged[-1].end_s, item.end_s))
        else:
            merged.append(item)
    return merged


def active_intervals(audio: np.ndarray, rate_hz: int, config: SeparationConfig) -> list[Interval]:
    """Where ``audio`` (C, S) sounds: thresholded frame RMS, merged and filtered (module docstring)."""
    level = frame_rms_dbfs(audio, rate_hz, config.activity_window_s, config.activity_hop_s)
    if config.activity_mode == "relative":
        threshold = max(float(level.max(initial=-200.0)) + config.activity_relative_db, config.activity_floor_dbfs)
    else:
        threshold = config.activity_absolute_dbfs
    active = np.concatenate([[False], level >= threshold, [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))  # run starts, then one past run ends
    duration_s, hop_s = audio.shape[1] / rate_hz, max(1, round(config.activity_hop_s * rate_hz)) / rate_hz
    bounds = [
        (max(0.0, (a - 0.5) * hop_s), min(duration_s, (b - 0.5) * hop_s)) for a, b in zip(edges[::2], edges[1::2])
    ]
    runs = [Interval(float(start), float(end)) for start, end in bounds if end > start]  # plain floats: JSON-ready
    merged = merge_intervals(runs, config.min_gap_s)
    return [i for i in merged if i.end_s - i.start_s >= config.min_active_s]


# --- production backend: AudioSep ----------------------------------------------------------------


class AudioSepSeparator:
    """Text-queried separation with a ready AudioSep model (``models.audiosep.AudioSep``, as
    ``pipeline.build_audiosep`` returns it). We mirror its ``pipeline.inference``::

        condition = model.query_encoder.get_query_embed(modality="text", text=[query], device=device)  # (1, D)
        waveform = model.ss_model({"mixture": (B, 1, S32), "condition": (B, D)})["waveform"]  # (B, 1, S32)

    Audio is resampled to 32 kHz (AudioSep's rate) and back; each channel is separated as one
    batch item (AudioSep is mono). Input: (C, S) float32 and queries; output: one waveform per
    query, shaped like the input. Whole clips go through in one forward pass (clips are short).
    """

    def __init__(self, model: Any, device: str = "cpu", weights_id: str = "unweighted") -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"separation.device={device!r} but torch sees no CUDA device")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backend_id = f"audiosep/{weights_id}"

    def separate(self, audio: np.ndarray, rate_hz: int, queries: Sequence[str]) -> list[tuple[str, np.ndarray]]:
        import torch
        from scipy.signal import resample_poly  # AudioSep's own pipeline needs scipy, so it is there

        if not queries:
            raise ValueError("audiosep separates by text query: give at least one sound name")
        gcd = math.gcd(AUDIOSEP_RATE_HZ, rate_hz)
        up, down = AUDIOSEP_RATE_HZ // gcd, rate_hz // gcd
        mixture = torch.from_numpy(resample_poly(audio, up, down, axis=-1).astype(np.float32))[:, None]  # (C, 1, S32)
        sources = []
        with torch.no_grad():
            for query in queries:
                condition = self.model.query_encoder.get_query_embed(modality="text", text=[query], device=self.device)
                batch = {"mixture": mixture.to(self.device), "condition": condition.expand(len(mixture), -1)}
                waveform = self.model.ss_model(batch)["waveform"][:, 0].float().cpu().numpy()  # (C, S32)
                back = resample_poly(waveform, down, up, axis=-1)[:, : audio.shape[1]]
                back = np.pad(back, [(0, 0), (0, audio.shape[1] - back.shape[1])])
                sources.append((query, back.astype(np.float32)))
        return sources


def _import_from_checkout(repo: str, module_name: str) -> Any:
    """``module_name`` imported from the checkout at ``repo`` (AudioSep's modules are top-level
    ``utils`` and ``models``: refuse a same-named module already imported from elsewhere)."""
    if repo not in sys.path:
        sys.path.insert(0, repo)
    module = importlib.import_module(module_name)
    origin = os.path.abspath(module.__file__ or "")
    if not origin.startswith(repo + os.sep):
        raise ValueError(f"separation.audiosep_repo={repo!r}, but {module_name!r} is already imported from {origin}")
    return module


def load_audiosep(config: SeparationConfig) -> AudioSepSeparator:
    """AudioSep as its ``pipeline.build_audiosep`` builds it, with every path explicit (its CLAP
    encoder otherwise looks for ``checkpoint/...`` relative to the working directory). CLAP also
    loads the ``roberta-base`` tokenizer through transformers: it must be in the local HF cache."""
    repo = os.path.abspath(config.audiosep_repo) if config.audiosep_repo else ""
    if not repo or not os.path.isfile(os.path.join(repo, "models", "clap_encoder.py")):
        raise FileNotFoundError(f"separation.audiosep_repo={config.audiosep_repo!r} is not a checkout of AudioSep")
    config_yaml = config.audiosep_config or os.path.join(repo, "config", "audiosep_base.yaml")
    for key, path in [
        ("audiosep_config", config_yaml),
        ("audiosep_checkpoint", config.audiosep_checkpoint),
        ("audiosep_clap_checkpoint", config.audiosep_clap_checkpoint),
    ]:
        if not path or not os.path.isfile(path):
            raise FileNotFoundError(f"separation.{key}={path!r} is not a file")
    utils = _import_from_checkout(repo, "utils")
    clap_encoder = _import_from_checkout(repo, "models.clap_encoder")
    query_encoder = clap_encoder.CLAP_Encoder(pretrained_path=os.path.abspath(config.audiosep_clap_checkpoint)).eval()
    model = utils.load_ss_model(
        configs=utils.parse_yaml(config_yaml), checkpoint_path=config.audiosep_checkpoint, query_encoder=query_encoder
    )
    return AudioSepSeparator(model, config.device, weights_id=os.path.basename(config.audiosep_checkpoint))


# --- the entry point -----------------------------------------------------------------------------


def separate_sources(
    audio: np.ndarray,
    rate_hz: int,
    config: SeparationConfig,
    separator: AudioSepSeparator | None = None,
    queries: Sequence[str] = (),
) -> tuple[list[Source], list[Interval]]:
    """A clip's audio (C, S) float32 -> (its sources with their active intervals, the union of
    all sources' intervals). ``separator``: a ready AudioSep (backend ``audiosep``; built from the
    config when None); ``queries``: its sound names."""
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise ValueError(f"audio must be (channels, samples) with samples > 0, got shape {audio.shape}")
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    audio = np.asarray(audio, dtype=np.float32)
    if config.backend == "audiosep":
        separator = separator if separator is not None else load_audiosep(config)
        separated = separator.separate(audio, rate_hz, queries)
    else:
        separated = masked_sources(audio, rate_hz, config)
    sources = [Source(name, wave, active_intervals(wave, rate_hz, config)) for name, wave in separated]
    return sources, merge_intervals([i for s in sources for i in s.active])
