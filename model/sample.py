"""Text -> a sounding video from a training checkpoint: ST-prior, rectified-flow sampling, decoding,
and an MP4 (H.264 + AAC) written with PyAV.

The checkpoint's config names the preset (model sizes) and its ``meta.json`` the encoder kind the
latents were made with (``tiny`` random modules or ``production`` local weights, whose folders
``encoder_paths`` gives, as for ``javis latents``). With an ST-Prior (the checkpoint is a joint or
prior one, or ``prior_checkpoint`` is given) the prior is drawn from the estimator; without one the
prior cross-attention is skipped (``prior_spatial = prior_temporal = None``), which is exactly how
the video and audio stages trained. Trained weights are replaced by their EMA when the checkpoint
holds one (``use_ema``); weights of earlier stages are used as that stage saved them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import checkpoint as ckpt
from model.encoders import build_encoders
from model.flow import sample as flow_sample
from model.javisdit import JavisDiT
from model.presets import preset as load_preset
from model.st_prior import STPriorEstimator


def _load(module: torch.nn.Module, weights: dict, ema: dict | None, use_ema: bool) -> None:
    module.load_state_dict(weights)
    if use_ema and ema:
        params = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in ema.items():
                params[name].copy_(value)
    module.eval()


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray, rate_hz: int) -> Path:
    """uint8 frames ``(T, H, W, 3)`` and mono float audio ``(S,)`` in [-1, 1] -> H.264 + AAC MP4."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 with yuv420p needs even sides, got {height}x{width}")
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=rate_hz, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(video.encode(None))
        samples = np.clip(audio, -1.0, 1.0).astype(np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + 1024]), format="flt",
                                               layout="mono")
            chunk.sample_rate = rate_hz
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    return path


def _check_device(device: str) -> None:
    """A device name torch knows and this machine has (a user mistake, not a traceback)."""
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise ValueError(f"--device {device!r}: {e}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: this machine has no CUDA GPU (use --device cpu)")


def sample(checkpoint: str | os.PathLike, prompt: str, output_path: str | os.PathLike, *, steps: int = 30,
           cfg: float = 7.0, seed: int = 0, num_frames: int | None = None, duration_s: float | None = None,
           resolution: tuple[int, int] | None = None, prior_checkpoint: str | os.PathLike | None = None,
           use_ema: bool = True, encoder_paths: Mapping[str, str] | None = None,
           device: str = "cpu", preset: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Write ``output_path`` (MP4) for ``prompt``; returns a summary (path, frames, duration, shapes).

    ``checkpoint``: a checkpoint folder or a run folder (its latest). Length: ``num_frames`` at the
    spec's fps, or ``duration_s``, default the shortest training bucket; ``resolution`` (height,
    width) defaults to the first bucket's. Paper defaults: 30 Euler steps, CFG 7.0. ``preset``,
    when given, must be the one the checkpoint was trained with (a clear error, not a shape one).
    """
    from model.latents import PAPER_BUCKETS, TINY_BUCKETS
    from model.spec import TINY

    loaded = ckpt.load_weights(checkpoint)
    if "dit" not in loaded:
        raise ValueError(f"{loaded['path']} holds no JavisDiT weights (a prior checkpoint without a DiT link)")
    trained = loaded["config"]["preset"]
    if preset is not None and preset != trained:
        raise ValueError(f"checkpoint {loaded['path']} was trained with preset {trained}, --preset {preset} given")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    _check_device(device)
    prior_source = ckpt.load_weights(prior_checkpoint) if prior_checkpoint else loaded
    if prior_source["config"]["preset"] != trained:
        raise ValueError(f"--prior-checkpoint {prior_source['path']} was trained with preset "
                         f"{prior_source['config']['preset']}, the checkpoint with {trained}")  # fmt: skip
    presets = load_preset(trained)
    spec = presets.dit.latents
    buckets = TINY_BUCKETS if spec == TINY else PAPER_BUCKETS
    height, width = resolution or buckets.resolutions[0]
    if num_frames is None:
        num_frames = round(duration_s * spec.video_fps) if duration_s else buckets.num_frames[0]
    if num_frames < 1:
        raise ValueError("need at least one frame")
    kind = ckpt.read_meta(loaded["path"]).get("encoders") or "tiny"
    encoders = build_encoders(kind, spec, encoder_paths).to(device)

    dit = JavisDiT(presets.dit)
    _load(dit, loaded["dit"], loaded.get("dit_ema"), use_ema)
    dit.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    text, text_mask = encoders.text.encode([prompt])
    prior_s = prior_t = None
    if "estimator" in prior_source:
        estimator = STPriorEstimator(presets.prior)
        _load(estimator, prior_source["estimator"], prior_source.get("estimator_ema"), use_ema)
        prior_text, prior_mask = encoders.prior_text.encode([prompt])
        prior = estimator.to(device).sample(prior_text.to(device), prior_mask.to(device), generator=generator)
        prior_s, prior_t = prior.spatial, prior.temporal

    num_samples = round(num_frames / spec.video_fps * spec.audio_rate_hz)
    video_shape = (1, *encoders.video.latent_shape(num_frames, height, width))
    audio_shape = (1, *encoders.audio.latent_shape(num_samples))
    video_lat, audio_lat = flow_sample(dit, text.to(device), text_mask.to(device), prior_s, prior_t,
                                       video_shape=video_shape, audio_shape=audio_shape, num_steps=steps,
                                       cfg_scale=cfg, generator=generator)
    frames = encoders.video.decode(video_lat.float(), num_frames)[0].cpu().numpy()  # (T, H, W, 3) uint8
    wave = encoders.audio.vocode(encoders.audio.decode(audio_lat.float()))[0].float().cpu().numpy()
    audio = np.zeros(num_samples, np.float32)
    audio[: min(num_samples, wave.size)] = wave[:num_samples]
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # an untrained model's mel can be loud: normalise rather than clip
        audio /= peak
    path = write_mp4(output_path, frames, spec.video_fps, audio, spec.audio_rate_hz)
    return {"output": str(path), "checkpoint": loaded["path"], "prompt": prompt, "num_frames": num_frames,
            "fps": spec.video_fps, "duration_s": num_frames / spec.video_fps, "height": height, "width": width,
            "audio_rate_hz": spec.audio_rate_hz, "num_samples": num_samples, "prior": prior_s is not None,
            "steps": steps, "cfg": cfg, "seed": seed}
