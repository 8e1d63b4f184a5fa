"""Dynamic temporal masking for x-conditional training (JavisDiT appendix F.1, after OpenSora).

Each training sample is assigned one task; the task decides which latent frames are given as clean
conditions. Conditioned frames get timestep 0 (so ``x_t`` is the clean latent there, see
``model/flow.py``) and weight 0 in the loss. Tasks:

- ``t2av``: text only, nothing conditioned (paper: 70% of samples)
- ``v2a``: all video frames given, audio generated
- ``a2v``: all audio frames given, video generated
- ``i2av``: the first video latent frame given (image animation with sound)
- ``ai2v``: the first video latent frame and all audio given (paper's audio-image-to-video)
- ``extension``: the same leading fraction of the clip given in both modalities

The paper spreads 30% over the x-conditional tasks; the default does so evenly.
"""

from __future__ import annotations

import dataclasses

import torch

TASKS = ("t2av", "v2a", "a2v", "i2av", "ai2v", "extension")


def _paper_probs() -> dict[str, float]:
    return {"t2av": 0.7, **{task: 0.3 / (len(TASKS) - 1) for task in TASKS[1:]}}


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """Task probabilities (normalised on use; tasks left out never occur) and extension prefix."""

    probs: dict[str, float] = dataclasses.field(default_factory=_paper_probs)
    extension_min_frac: float = 0.25  # shortest given prefix, as a fraction of the clip
    extension_max_frac: float = 0.5  # longest given prefix
    audio_frame_quantum: int = 1  # audio prefixes are multiples of this (the DiT's audio time patch)

    def __post_init__(self) -> None:
        unknown = set(self.probs) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
        if any(p < 0 for p in self.probs.values()) or sum(self.probs.values()) <= 0:
            raise ValueError("task probabilities must be non-negative with a positive sum")
        if not 0.0 < self.extension_min_frac <= self.extension_max_frac < 1.0:
            raise ValueError("need 0 < extension_min_frac <= extension_max_frac < 1")
        if self.audio_frame_quantum < 1:
            raise ValueError("audio_frame_quantum must be positive")


@dataclasses.dataclass
class ConditionMasks:
    """Per-sample ``tasks`` and boolean masks ``video (B, T_lat)``, ``audio (B, A_lat)``: True = given."""

    tasks: list[str]
    video: torch.Tensor
    audio: torch.Tensor

    @property
    def video_loss_weight(self) -> torch.Tensor:
        return (~self.video).float()

    @property
    def audio_loss_weight(self) -> torch.Tensor:
        return (~self.audio).float()


def _prefix(num_frames: int, frac: float, quantum: int = 1) -> int:
    """Leading frames to give: about ``frac`` of them, a multiple of ``quantum``, leaving one to make."""
    count = int(round(frac * num_frames / quantum)) * quantum
    return max(0, min(max(count, quantum), num_frames - 1))


def task_masks(task: str, num_video_frames: int, num_audio_frames: int, *, prefix_frac: float = 0.5,
               audio_frame_quantum: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(T_lat,)`` and ``(A_lat,)`` masks of the given frames for one ``task``."""
    video = torch.zeros(num_video_frames, dtype=torch.bool)
    audio = torch.zeros(num_audio_frames, dtype=torch.bool)
    if task == "t2av":
        pass
    elif task == "v2a":
        video[:] = True
    elif task == "a2v":
        audio[:] = True
    elif task == "i2av":
        video[:1] = True
    elif task == "ai2v":
        video[:1] = True
        audio[:] = True
    elif task == "extension":
        video[: _prefix(num_video_frames, prefix_frac)] = True
        audio[: _prefix(num_audio_frames, prefix_frac, audio_frame_quantum)] = True
    else:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    return video, audio


def draw_condition_masks(batch_size: int, num_video_frames: int, num_audio_frames: int, config: MaskingConfig, *,
                         generator: torch.Generator | None = None, device=None) -> ConditionMasks:
    """Draw one task per sample with ``config.probs`` and return its conditioning masks."""
    names = [task for task in TASKS if config.probs.get(task, 0.0) > 0]
    weights = torch.tensor([config.probs[task] for task in names], dtype=torch.float64)
    picks = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
    fracs = config.extension_min_frac + (config.extension_max_frac - config.extension_min_frac) * torch.rand(
        batch_size, generator=generator, dtype=torch.float64)
    tasks, videos, audios = [], [], []
    for pick, frac in zip(picks.tolist(), fracs.tolist()):
        task = names[pick]
        video, audio = task_masks(task, num_video_frames, num_audio_frames, prefix_frac=frac,
                                  audio_frame_quantum=config.audio_frame_quantum)
        tasks.append(task)
        videos.append(video)
        audios.append(audio)
    return ConditionMasks(tasks, torch.stack(videos).to(device), torch.stack(audios).to(device))


def apply_condition(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or ``(B, F)`` timesteps -> ``(B, F)`` with 0 on the given frames of ``mask (B, F)``."""
    tf = t[:, None].expand(-1, mask.shape[1]) if t.ndim == 1 else t
    return torch.where(mask.to(tf.device), torch.zeros_like(tf), tf)
