"""Benchmark the training side in one process: encoder throughput (``javis latents``' per-clip
work), optimizer steps per second and peak memory per training stage, and the memory the paper
sizes need.

python bench/bench_train.py [--model javisdit|ditpp|both] [--preset tiny] [--batch-size 2] [--steps 10]
                            [--frames 32] [--pp-frames 25] [--height 64] [--width 64] [--json FILE]

1. encode: the preset's encoders (tiny random ones: ``--encoders tiny``; the production ones need
   weights) on synthetic clips of ``--frames`` frames at ``--height`` x ``--width`` and their
   16 kHz audio: clips per second for video VAE, audio (log-mel + VAE) and both text encoders.
2. steps: for each stage (video, audio, prior, joint) the stage's objective (``model.train``)
   with the parameters ``freeze_for_stage`` trains, AdamW, clipping, on batches of the latent
   shapes those clips give; seconds per step after one warm-up step, and the process's peak RSS
   growth over the stage (``ru_maxrss``; stages run in order, so later stages show only their
   own increase above the earlier peak), and ``state_mb``: the exact bytes of the objective's
   weights and buffers, the gradients and the AdamW state after the steps.
3. paper sizes: parameter counts on the meta device and the bytes of weights, gradients and the
   two AdamW moments per trainable parameter in fp32 (an estimate from the counts, not a
   measurement: no GPU here).

``--model ditpp`` (or ``both``, the default) does the same for JavisDiT++ (``model/ditpp.py``):

1. encode: the ``ditpp-<preset>`` encoders (tiny: a random ``AutoencoderKLWan``, log-mel + audio
   VAE, umT5-tiny) on clips of ``--pp-frames`` frames (4k + 1, as the causal Wan VAE wants; 25 at
   8 fps is a ``DITPP_TINY_BUCKETS`` duration) at ``--height`` x ``--width`` and their audio.
2. steps: audio-pp and sft built by ``model.train_ditpp.build_objective`` from a ``TrainConfig``
   (no ``--wan-from``: random weights; sft adds the preset's LoRA); dpo as its dpo branch (which
   needs an sft checkpoint): the sft-built LoRA model as policy, a frozen deep copy as reference,
   ``DPOObjective``, on (winner, loser) latents of the clips' shapes (loser = another clip of the
   batch). ``samples_per_s`` of dpo counts pairs; each pair is 2 policy + 2 reference samples.
3. paper sizes: as above, plus the LoRA for sft/dpo and, for dpo, the frozen reference copy's
   weights. Every stage also gets the fp32 EMA shadow the trainer keeps of the trained parameters
   (``model/ema.py``; a separate column, not in the JavisDiT figures above) and a variant with the
   frozen weights (and the dpo reference) in bf16: not what ``javis train`` does today (it keeps
   fp32 weights and autocasts to bf16), what casting the frozen part would give.

Single process, intra-op threads as torch sets them: on a 2-core machine, CPU numbers say how
the code scales, not what a GPU gives. The JSON report goes to stdout (``--json``: also to a
file), a text table of the paper-size estimates to stderr.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as ``python bench/bench_train.py`` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from model.ditpp import DITPP_STAGES  # noqa: E402
from model.dpo import DPOObjective  # noqa: E402
from model.encoders import build_encoders, log_mel  # noqa: E402
from model.javisdit import JavisDiT, freeze_for_stage, init_audio_from_video  # noqa: E402
from model.params import count_parameters  # noqa: E402
from model.presets import preset  # noqa: E402
from model.spec import latent_spec  # noqa: E402
from model.st_prior import STPriorEstimator, VAEncoder  # noqa: E402
from model.train import FlowObjective, PriorObjective, TrainConfig, train_step  # noqa: E402
from model.train_ditpp import build_objective as build_ditpp_objective  # noqa: E402

STAGES = ("video", "audio", "prior", "joint")
GB = 1e9
ENCODE_REPEATS = 5  # timed encoder calls after the warm-up (the fastest is kept): 3 was noisy on a shared machine


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _timed(fn, repeats: int) -> float:
    """Seconds per call: the fastest of ``repeats`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _bench_encoders(spec, num_frames: int, num_samples: int, args: argparse.Namespace,
                    labels: tuple[str, str, str]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The tiny encoders of ``spec`` on ``num_frames`` frames and ``num_samples`` audio samples per
    clip: clips per second of (video VAE, log-mel + audio VAE, text encoders) under ``labels``."""
    enc = build_encoders("tiny", spec)
    gen = torch.Generator().manual_seed(0)
    b = args.batch_size
    frames = torch.randint(0, 256, (b, num_frames, args.height, args.width, 3), generator=gen, dtype=torch.uint8)
    wave = 0.1 * torch.randn(b, num_samples, generator=gen)
    texts = ["a dog barks while rain falls on a tin roof"] * b
    out: dict[str, torch.Tensor] = {}

    def video():
        out["video"] = enc.video.encode(frames)

    def audio():
        out["audio"] = enc.audio.encode(log_mel(wave, spec))

    def text():
        out["text"], out["text_mask"] = enc.text.encode(texts)
        if enc.prior_text is not None:  # JavisDiT++ has no ST-Prior
            out["prior_text"], out["prior_text_mask"] = enc.prior_text.encode(texts)

    with torch.no_grad():
        seconds = {k: _timed(fn, ENCODE_REPEATS) for k, fn in zip(labels, (video, audio, text))}
    batch = {k: v.clone() for k, v in out.items()}  # the encoders run in inference mode; training needs plain tensors
    return {f"{k}_clips_per_s": round(b / s, 2) for k, s in seconds.items()}, batch


def bench_encode(name: str, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    spec = preset(name).dit.latents
    samples = int(args.frames / spec.video_fps * spec.audio_rate_hz)
    return _bench_encoders(spec, args.frames, samples, args, ("video_vae", "audio_mel_vae", "text"))


def _objective(stage: str, name: str) -> torch.nn.Module:
    p = preset(name)
    if stage == "prior":
        estimator, va = STPriorEstimator(p.prior), VAEncoder(p.prior)
        freeze_for_stage(estimator, "prior")
        freeze_for_stage(va, "prior")
        return PriorObjective(estimator, va)
    dit = JavisDiT(p.dit)
    if stage == "audio":
        init_audio_from_video(dit)
    estimator = None
    if stage == "joint":
        estimator = STPriorEstimator(p.prior)
        freeze_for_stage(estimator, "joint")
    freeze_for_stage(dit, stage)
    return FlowObjective(stage, dit, estimator)


def _measure(objective: torch.nn.Module, data: dict[str, Any], args: argparse.Namespace, before_mb: float,
             samples: int) -> dict[str, float]:
    """Time ``train_step`` on ``objective`` (AdamW, clip 1.0); ``samples`` per step for samples/s."""
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    objective.train()
    gen, mask_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    step = functools.partial(train_step, objective, optimizer, params, data, gen, mask_gen, 1.0)
    seconds = _timed(step, args.steps)
    tensors = [*objective.parameters(), *objective.buffers(), *(p.grad for p in params if p.grad is not None),
               *(v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))]
    return {
        "trainable_params": sum(p.numel() for p in params),
        "s_per_step": round(seconds, 4),
        "samples_per_s": round(samples / seconds, 2),
        "peak_rss_growth_mb": round(_peak_mb() - before_mb, 1),
        # exact bytes of weights, buffers, gradients and AdamW state: the tiny counterpart of the paper estimate
        "state_mb": round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 2),
    }


def bench_steps(name: str, batch: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    results = {}
    for stage in STAGES:
        before = _peak_mb()
        objective = _objective(stage, name)
        data = dict(batch)
        if stage == "prior":  # the asynchronous pair: another clip's video with this audio
            data.update(neg_video=batch["video"].roll(1, dims=0), neg_audio=batch["audio"])
        results[stage] = _measure(objective, data, args, before, args.batch_size)
        del objective
    return results


# ---------------------------------------------------------------- JavisDiT++


def bench_encode_ditpp(name: str, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The ``ditpp-<name>`` encoders on ``--pp-frames`` frames and their audio (``javis latents``'
    length: ``round(frames / fps * rate)`` samples); no prior text (JavisDiT++ has no ST-Prior)."""
    spec = latent_spec(f"ditpp-{name}")
    samples = round(args.pp_frames / spec.video_fps * spec.audio_rate_hz)
    return _bench_encoders(spec, args.pp_frames, samples, args, ("wan_video_vae", "audio_mel_vae", "umt5_text"))


def _ditpp_objective(stage: str, name: str) -> torch.nn.Module:
    """As ``javis train --stage <stage>`` builds it on each worker (``model.train_ditpp.build_objective``),
    without ``--wan-from`` / ``--init-from`` (random weights: the timing does not depend on them)."""
    import logging

    quiet = logging.getLogger("model.train_ditpp")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "audio-pp without --wan-from" is expected here
    try:
        if stage != "dpo":
            return build_ditpp_objective(TrainConfig(stage=stage, data="", output="", preset=name))[0]
        # build_objective's dpo branch loads an sft checkpoint; the same from an sft-built model:
        sft = build_ditpp_objective(TrainConfig(stage="sft", data="", output="", preset=name))[0]
    finally:
        quiet.setLevel(level)
    from model.ditpp import freeze_for_ditpp_stage

    dit = sft.dit
    freeze_for_ditpp_stage(dit, "dpo")
    return DPOObjective(dit, copy.deepcopy(dit), TrainConfig(stage="dpo", data="", output="").beta)


def bench_steps_ditpp(name: str, batch: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {}
    for stage in DITPP_STAGES:
        before = _peak_mb()
        objective = _ditpp_objective(stage, name)
        if stage == "dpo":  # a preference batch (collate_preference's keys); loser: another clip's latents
            data = {"video_w": batch["video"], "audio_w": batch["audio"], "video_l": batch["video"].roll(1, dims=0),
                    "audio_l": batch["audio"].roll(1, dims=0), "text": batch["text"], "text_mask": batch["text_mask"]}
        else:
            data = dict(batch)
        results[stage] = _measure(objective, data, args, before, args.batch_size)
        del objective
    return results


def _gb(frozen: int, trainable: int, reference: int = 0) -> dict[str, float]:
    """Bytes per replica before activations, in GB (1e9):

    - ``fp32_gb``: fp32 weights of everything (frozen and trained, and a dpo reference) + fp32
      gradients and the two fp32 AdamW moments of the trained part: 4 B per frozen parameter,
      16 B per trained one. What ``javis train`` holds (autocast keeps fp32 weights).
    - ``ema_gb``: the fp32 EMA shadow of the trained parameters (4 B each) the trainer adds.
    - ``bf16_frozen_gb``: as ``fp32_gb`` with the frozen weights (and reference) in bf16 (2 B):
      the trained part keeps fp32 master weights, gradients and moments. Not done today."""
    return {"fp32_gb": round((4 * (frozen + reference) + 16 * trainable) / GB, 1),
            "ema_gb": round(4 * trainable / GB, 1),
            "bf16_frozen_gb": round((2 * (frozen + reference) + 16 * trainable) / GB, 1)}


def paper_memory() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("prior", "dit"):
        counts = count_parameters(kind, "paper")
        entry = {"total": counts["total"], "paper_units": counts["paper_units"]}
        for stage, trainable in (counts.get("trainable_by_stage") or {"prior": counts["trainable"]}).items():
            frozen = counts["total"] - trainable
            # fp32 weights for everything; gradients and two AdamW moments for the trained part
            gb = _gb(frozen, trainable)
            entry[f"{stage}_fp32_gb"] = gb["fp32_gb"]
            entry[f"{stage}_ema_gb"], entry[f"{stage}_bf16_frozen_gb"] = gb["ema_gb"], gb["bf16_frozen_gb"]
            entry[f"{stage}_trainable"] = trainable
        out[kind] = entry
    counts = count_parameters("ditpp", "paper")
    entry = {"total": counts["total"], "paper_units": counts["paper_units"], "lora": counts["lora"],
             "total_with_lora": counts["total_with_lora"]}
    for stage, trainable in counts["trainable_by_stage"].items():
        weights = counts["total"] if stage == "audio-pp" else counts["total_with_lora"]  # sft/dpo: + LoRA
        reference = weights if stage == "dpo" else 0  # DPOObjective's frozen deep copy of the policy
        gb = _gb(weights - trainable, trainable, reference)
        entry[f"{stage}_trainable"] = trainable
        entry[f"{stage}_weights_params"] = weights
        entry[f"{stage}_reference_params"] = reference
        for key, value in gb.items():
            entry[f"{stage}_{key}"] = value
    out["ditpp"] = entry
    return out


def paper_table(memory: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage, JavisDiT's four then JavisDiT++'s three."""
    rows = []
    for model, kind, stages in (("JavisDiT", "prior", ("prior",)), ("JavisDiT", "dit", ("video", "audio", "joint")),
                                ("JavisDiT++", "ditpp", DITPP_STAGES)):
        entry = memory[kind]
        for stage in stages:
            params = entry.get(f"{stage}_weights_params", entry["total"]) + entry.get(f"{stage}_reference_params", 0)
            rows.append({"model": model, "stage": stage, "params_in_memory": params,
                         "trainable": entry[f"{stage}_trainable"],
                         **{k: entry[f"{stage}_{k}"] for k in ("fp32_gb", "ema_gb", "bf16_frozen_gb")}})
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = ("model", "stage", "params held", "trainable", "fp32 GB", "+EMA GB", "bf16-frozen GB")
    lines = [head] + [(r["model"], r["stage"], f"{r['params_in_memory']:,}", f"{r['trainable']:,}", str(r["fp32_gb"]),
                       str(r["ema_gb"]), str(r["bf16_frozen_gb"])) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    print("paper sizes, per replica, before activations (GB = 1e9 bytes):", file=sys.stderr)
    for line in lines:
        print("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))),
              file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("javisdit", "ditpp", "both"), default="both")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage (the fastest is kept)")
    parser.add_argument("--frames", type=int, default=32, help="JavisDiT clips: frames at 8 fps")
    parser.add_argument("--pp-frames", type=int, default=25, help="JavisDiT++ clips: frames (4k + 1) at 8 fps")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    report: dict[str, Any] = {"preset": args.preset, "batch_size": args.batch_size}
    report["torch_threads"] = torch.get_num_threads()
    if args.model in ("javisdit", "both"):
        report["encode"], batch = bench_encode(args.preset, args)
        report["latent_shapes"] = {k: list(v.shape) for k, v in batch.items()}
        report["steps"] = bench_steps(args.preset, batch, args)
    if args.model in ("ditpp", "both"):
        pp: dict[str, Any] = {"frames": args.pp_frames, "height": args.height, "width": args.width}
        pp["encode"], batch = bench_encode_ditpp(args.preset, args)
        pp["latent_shapes"] = {k: list(v.shape) for k, v in batch.items()}
        pp["steps"] = bench_steps_ditpp(args.preset, batch, args)
        report["ditpp"] = pp
    report["paper_memory"] = paper_memory()
    report["paper_memory_table"] = paper_table(report["paper_memory"])
    text = json.dumps(report, indent=2)
    print(text)
    _print_table(report["paper_memory_table"])
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
