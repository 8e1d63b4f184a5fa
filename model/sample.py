"""Text -> a sounding video from a training checkpoint: ST-prior, rectified-flow sampling, decoding,
and an MP4 (H.264 + AAC) written with PyAV.

The checkpoint's config names the preset (model sizes) and its ``meta.json`` the encoder kind the
latents were made with (``tiny`` random modules or ``production`` local weights, whose folders
``encoder_paths`` gives, as for ``javis latents``). With an ST-Prior (the checkpoint is a joint or
prior one, or ``prior_checkpoint`` is given) the prior is drawn from the estimator; without one the
prior cross-attention is skipped (``prior_spatial = prior_temporal = None``), which is exactly how
the video and audio stages trained. Trained weights are replaced by their EMA when the checkpoint
holds one (``use_ema``); weights of earlier stages are used as that stage saved them.

JavisDiT++ checkpoints (stage in ``model.ditpp.DITPP_STAGES``, or ``meta.json`` ``"model":
"ditpp"``) are built with ``model.ditpp.ditpp_from_state_dict`` (LoRA applied when the state dict
holds LoRA keys) and sampled without a prior: JavisDiT++ has none.

:class:`Generator` loads everything once and samples a batch of (prompt, seed) candidates; it
serves ``javis sample`` (one candidate) and the generation actors of ``javis preference``. Each
candidate's noise (and prior) comes from its own ``torch.Generator`` seeded with its seed, drawn in
the order prior, video noise, audio noise, so a candidate is the same whatever batch it is in (up
to float rounding of batched kernels) and a batch of one reproduces ``javis sample``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import checkpoint as ckpt
from model.ditpp import CHECKPOINT_MODEL, DITPP_STAGES, ditpp_from_state_dict, ditpp_preset
from model.encoders import build_encoders
from model.flow import euler_sample
from model.latents import default_buckets, name_of_spec


def _load(module: torch.nn.Module, weights: dict | None, ema: dict | None, use_ema: bool) -> None:
    if weights is not None:
        module.load_state_dict(weights)
    if use_ema and ema:
        params = dict(module.named_parameters())
        unknown = sorted(set(ema) - set(params))
        if unknown:
            raise ValueError(f"the checkpoint's EMA has parameters the model lacks: {unknown[:5]}")
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


def is_ditpp(loaded: Mapping[str, Any]) -> bool:
    """A JavisDiT++ checkpoint: its meta says so, or its stage is one of JavisDiT++'s."""
    return ckpt.read_meta(loaded["path"]).get("model") == CHECKPOINT_MODEL or loaded["stage"] in DITPP_STAGES


class Generator:
    """A checkpoint's DiT (+ ST-Prior) and encoders, loaded once; :meth:`generate` samples candidates.

    ``checkpoint``: a checkpoint or run folder (its latest). ``prior_checkpoint``: an ST-Prior
    checkpoint when ``checkpoint`` has none (JavisDiT only). ``preset``: when given, must be the
    checkpoint's. ``ValueError`` for a checkpoint without a DiT, a preset mismatch or a bad device.
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu",
                 encoder_paths: Mapping[str, str] | None = None, use_ema: bool = True,
                 prior_checkpoint: str | os.PathLike | None = None, preset: str | None = None) -> None:  # fmt: skip
        _check_device(device)
        loaded = ckpt.load_weights(checkpoint)
        if "dit" not in loaded:
            raise ValueError(f"{loaded['path']} holds no JavisDiT weights (a prior checkpoint without a DiT link)")
        self.preset = loaded["config"]["preset"]
        if preset is not None and preset != self.preset:
            raise ValueError(f"checkpoint {loaded['path']} was trained with preset {self.preset}, --preset {preset} given")
        self.device, self.checkpoint, self.stage = device, loaded["path"], loaded["stage"]
        self.model_kind = "javisdit++" if is_ditpp(loaded) else "javisdit"
        self.estimator = None
        if self.model_kind == "javisdit++":
            if prior_checkpoint:
                raise ValueError("JavisDiT++ has no ST-Prior: --prior-checkpoint does not apply")
            config = ditpp_preset(self.preset)
            self.dit = ditpp_from_state_dict(config, loaded["dit"])
            _load(self.dit, None, loaded.get("dit_ema"), use_ema)
        else:
            self.dit, config = self._javisdit(loaded, prior_checkpoint, use_ema)
        self.spec = config.latents
        self.buckets = default_buckets(self.spec)
        self.encoder_kind = ckpt.read_meta(loaded["path"]).get("encoders") or "tiny"
        self.encoders = build_encoders(self.encoder_kind, self.spec, encoder_paths).to(device)
        self.dit.to(device)

    def _javisdit(self, loaded: dict, prior_checkpoint: str | os.PathLike | None, use_ema: bool) -> tuple[Any, Any]:
        from model.javisdit import JavisDiT
        from model.presets import preset as load_preset
        from model.st_prior import STPriorEstimator

        prior_source = ckpt.load_weights(prior_checkpoint) if prior_checkpoint else loaded
        if prior_source["config"]["preset"] != self.preset:
            raise ValueError(f"--prior-checkpoint {prior_source['path']} was trained with preset "
                             f"{prior_source['config']['preset']}, the checkpoint with {self.preset}")  # fmt: skip
        presets = load_preset(self.preset)
        dit = JavisDiT(presets.dit)
        _load(dit, loaded["dit"], loaded.get("dit_ema"), use_ema)
        if "estimator" in prior_source:
            self.estimator = STPriorEstimator(presets.prior)
            _load(self.estimator, prior_source["estimator"], prior_source.get("estimator_ema"), use_ema)
            self.estimator.to(self.device)
        return dit, presets.dit

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "stage": self.stage, "preset": self.preset, "model": self.model_kind,
                "latent_spec": name_of_spec(self.spec), "encoders": self.encoder_kind, "prior": self.estimator is not None}  # fmt: skip

    def shape(self, num_frames: int | None = None, resolution: tuple[int, int] | None = None,
              duration_s: float | None = None) -> tuple[int, int, int]:  # fmt: skip
        """(num_frames, height, width): the given ones, else the shortest bucket at the first resolution."""
        height, width = resolution or self.buckets.resolutions[0]
        if num_frames is None:
            num_frames = round(duration_s * self.spec.video_fps) if duration_s else self.buckets.num_frames[0]
        if num_frames < 1:
            raise ValueError("need at least one frame")
        return num_frames, height, width

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], num_frames: int | None = None,
                 resolution: tuple[int, int] | None = None, steps: int = 30, cfg: float = 7.0,
                 duration_s: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """One candidate per (prompt, seed), sampled as one batch. Each is a dict: ``video_latent``
        ``(Cv, T_lat, H_lat, W_lat)`` and ``audio_latent`` ``(Ca, A_lat, F_lat)`` (float32 CPU
        tensors), ``text_states`` ``(num_valid_tokens, text_dim)`` and ``text_len`` (the padded
        length), ``frames`` uint8 ``(T, H, W, 3)``, ``audio`` float32 ``(S,)`` in [-1, 1] at
        ``audio_rate_hz``, and ``fps``, ``num_frames``, ``height``, ``width``, ``prior``."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        if not prompts:
            return []
        num_frames, height, width = self.shape(num_frames, resolution, duration_s)
        spec, device = self.spec, self.device
        num_samples = round(num_frames / spec.video_fps * spec.audio_rate_hz)
        video_shape = self.encoders.video.latent_shape(num_frames, height, width)
        audio_shape = self.encoders.audio.latent_shape(num_samples)
        text, text_mask = self.encoders.text.encode(list(prompts))
        text, text_mask = text.to(device), text_mask.to(device)
        dtype = next(self.dit.parameters()).dtype
        priors, video_noise, audio_noise = [], [], []
        for i, seed in enumerate(seeds):
            g = torch.Generator(device=device).manual_seed(int(seed))
            if self.estimator is not None:
                prior_text, prior_mask = self.encoders.prior_text.encode([prompts[i]])
                priors.append(self.estimator.sample(prior_text.to(device), prior_mask.to(device), generator=g))
            video_noise.append(torch.randn((1, *video_shape), generator=g, device=device).to(dtype))
            audio_noise.append(torch.randn((1, *audio_shape), generator=g, device=device).to(dtype))
        prior_s = torch.cat([p.spatial for p in priors]) if priors else None
        prior_t = torch.cat([p.temporal for p in priors]) if priors else None

        def velocity(video, audio, t_video, t_audio):
            return self.dit.forward_with_cfg(video, audio, t_video, t_audio, text, text_mask, prior_s, prior_t,
                                             cfg_scale=cfg)

        video_lat, audio_lat = euler_sample(velocity, torch.cat(video_noise), torch.cat(audio_noise), num_steps=steps)
        frames = self.encoders.video.decode(video_lat.float(), num_frames).cpu().numpy()  # (B, T, H, W, 3) uint8
        waves = self.encoders.audio.vocode(self.encoders.audio.decode(audio_lat.float())).float().cpu().numpy()
        out = []
        for i in range(len(prompts)):
            audio = np.zeros(num_samples, np.float32)
            audio[: min(num_samples, waves[i].size)] = waves[i][:num_samples]
            peak = float(np.abs(audio).max())
            if peak > 1.0:  # an untrained model's mel can be loud: normalise rather than clip
                audio /= peak
            out.append({"video_latent": video_lat[i].float().cpu(), "audio_latent": audio_lat[i].float().cpu(),
                        "text_states": text[i][text_mask[i]].float().cpu(), "text_len": int(text.shape[1]),
                        "frames": frames[i], "audio": audio, "fps": spec.video_fps, "num_frames": num_frames,
                        "height": height, "width": width, "audio_rate_hz": spec.audio_rate_hz,
                        "prior": self.estimator is not None})  # fmt: skip
        return out


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
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    generator = Generator(checkpoint, device, encoder_paths, use_ema, prior_checkpoint, preset)
    [c] = generator.generate([prompt], [seed], num_frames, resolution, steps, cfg, duration_s)
    path = write_mp4(output_path, c["frames"], c["fps"], c["audio"], c["audio_rate_hz"])
    return {"output": str(path), "checkpoint": generator.checkpoint, "prompt": prompt, "num_frames": c["num_frames"],
            "fps": c["fps"], "duration_s": c["num_frames"] / c["fps"], "height": c["height"], "width": c["width"],
            "audio_rate_hz": c["audio_rate_hz"], "num_samples": len(c["audio"]), "prior": c["prior"],
            "steps": steps, "cfg": cfg, "seed": seed}  # fmt: skip
