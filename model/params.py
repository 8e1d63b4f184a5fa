"""Parameter counts of the presets, built on the meta device (no memory, instant for 3B models).

The paper's numbers (3.14B JavisDiT, Tab. A1: 1.11B / 29.3M / 923.8M trainable per stage) were
printed with OpenSora's ``format_numel_str``, which divides by 1024**3 and 1024**2; ``paper_units``
reports ours the same way so the two can be compared digit for digit.
"""

from __future__ import annotations

import torch

from model.javisdit import JavisDiT, freeze_for_stage
from model.presets import preset as load_preset
from model.st_prior import STPriorEstimator, VAEncoder

KINDS = ("prior", "dit", "ditpp")
DIT_STAGES = ("video", "audio", "joint")  # stages that train DiT parameters


def paper_units(numel: int) -> str:
    """Format like OpenSora's ``format_numel_str``: "3.14 B" means 3.14 * 1024**3 parameters."""
    for unit, size in (("B", 1024**3), ("M", 1024**2), ("K", 1024)):
        if numel >= size:
            return f"{numel / size:.2f} {unit}"
    return str(numel)


def _numel(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_parameters(kind: str, preset: str, stage: str | None = None) -> dict:
    """``{"kind", "preset", "total", "trainable", "paper_units", ...}`` for ``kind`` "prior" or "dit".

    prior: estimator plus the training-only VA encoder and discriminator, all trained in the "prior"
    stage (the frozen ImageBind text encoder is an input, not counted). dit: ``trainable`` after
    :func:`~model.javisdit.freeze_for_stage` for ``stage`` (everything when ``stage`` is None), plus
    ``trainable_by_stage`` for each stage that trains the DiT.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    if kind == "ditpp":
        return count_ditpp_parameters(preset, stage)
    configs = load_preset(preset)
    if kind == "prior":
        with torch.device("meta"):
            estimator, va_encoder = STPriorEstimator(configs.prior), VAEncoder(configs.prior)
        total = _numel(estimator) + _numel(va_encoder)
        return {"kind": kind, "preset": preset, "total": total, "trainable": total, "paper_units": paper_units(total),
                "estimator": _numel(estimator), "va_encoder": _numel(va_encoder)}
    with torch.device("meta"):
        model = JavisDiT(configs.dit)
    total = _numel(model)
    by_stage = {}
    for name in DIT_STAGES:
        freeze_for_stage(model, name)
        by_stage[name] = _numel(model, trainable_only=True)
    model.requires_grad_(True)
    trainable = total if stage is None else sum(p.numel() for p in freeze_for_stage(model, stage))
    return {
        "kind": kind, "preset": preset, "total": total, "trainable": trainable, "stage": stage,
        "paper_units": paper_units(total),
        "trainable_by_stage": by_stage,
        "trainable_by_stage_paper_units": {name: paper_units(n) for name, n in by_stage.items()},
        "video_branch": _numel(model.video), "audio_branch": _numel(model.audio),
    }


def count_ditpp_parameters(preset: str, stage: str | None = None) -> dict:
    """``count_parameters``' keys for JavisDiT++ (:mod:`model.ditpp`). ``total`` is the model
    without adapters; ``lora`` the adapters that :meth:`~model.ditpp.JavisDiTPP.add_lora` adds for
    "sft" and "dpo" (whose ``trainable`` they are), ``total_with_lora`` both. ``video`` / ``audio``:
    parameters only that modality's tokens pass through; ``shared``: the rest (attention,
    embedders, block tables), of which ``wan_backbone`` (shared + video) is Wan2.1's own set."""
    from model.ditpp import (
        DITPP_STAGES,
        JavisDiTPP,
        ditpp_preset,
        freeze_for_ditpp_stage,
        is_audio_parameter,
        is_video_parameter,
    )
    from model.lora import lora_parameters

    if stage is not None and stage not in DITPP_STAGES:
        raise ValueError(f"unknown ditpp stage {stage!r}; choose one of {DITPP_STAGES}")
    with torch.device("meta"):
        model = JavisDiTPP(ditpp_preset(preset))
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    video = sum(p.numel() for n, p in named.items() if is_video_parameter(n))
    audio = sum(p.numel() for n, p in named.items() if is_audio_parameter(n))
    null_text = model.null_text.numel()
    with torch.device("meta"):
        model.add_lora()
    lora = sum(p.numel() for p in lora_parameters(model))
    by_stage = {name: sum(p.numel() for p in freeze_for_ditpp_stage(model, name)) for name in DITPP_STAGES}
    trainable = total if stage is None else by_stage[stage]
    return {
        "kind": "ditpp", "preset": preset, "total": total, "trainable": trainable, "stage": stage,
        "paper_units": paper_units(total),
        "trainable_by_stage": by_stage,
        "trainable_by_stage_paper_units": {name: paper_units(n) for name, n in by_stage.items()},
        "video": video, "audio": audio, "shared": total - video - audio,
        "wan_backbone": total - audio - null_text, "wan_backbone_paper_units": paper_units(total - audio - null_text),
        "lora": lora, "total_with_lora": total + lora,
    }
