"""Benchmark the training side in one process: encoder throughput (``javis latents``' per-clip
work), optimizer steps per second and peak memory per training stage, and the memory the paper
sizes need.

python bench/bench_train.py [--preset tiny] [--batch-size 2] [--steps 10] [--frames 32]
                            [--height 64] [--width 64] [--json FILE]

1. encode: the preset's encoders (tiny random ones: ``--encoders tiny``; the production ones need
   weights) on synthetic clips of ``--frames`` frames at ``--height`` x ``--width`` and their
   16 kHz audio: clips per second for video VAE, audio (log-mel + VAE) and both text encoders.
2. steps: for each stage (video, audio, prior, joint) the stage's objective (``model.train``)
   with the parameters ``freeze_for_stage`` trains, AdamW, clipping, on batches of the latent
   shapes those clips give; seconds per step after one warm-up step, and the process's peak RSS
   growth over the stage (``ru_maxrss``; stages run in order, so later stages show only their
   own increase above the earlier peak).
3. paper sizes: parameter counts on the meta device and the bytes of weights, gradients and the
   two AdamW moments per trainable parameter in fp32 (an estimate from the counts, not a
   measurement: no GPU here).

Single process, intra-op threads as torch sets them: on a 2-core machine, CPU numbers say how
the code scales, not what a GPU gives.
"""

from __future__ import annotations

import argparse
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

from model.encoders import build_encoders, log_mel  # noqa: E402
from model.javisdit import JavisDiT, freeze_for_stage, init_audio_from_video  # noqa: E402
from model.params import count_parameters  # noqa: E402
from model.presets import preset  # noqa: E402
from model.st_prior import STPriorEstimator, VAEncoder  # noqa: E402
from model.train import FlowObjective, PriorObjective, train_step  # noqa: E402

STAGES = ("video", "audio", "prior", "joint")


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


def bench_encode(name: str, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    spec = preset(name).dit.latents
    enc = build_encoders("tiny", spec)
    gen = torch.Generator().manual_seed(0)
    b = args.batch_size
    frames = torch.randint(0, 256, (b, args.frames, args.height, args.width, 3), generator=gen, dtype=torch.uint8)
    samples = int(args.frames / spec.video_fps * spec.audio_rate_hz)
    wave = 0.1 * torch.randn(b, samples, generator=gen)
    texts = ["a dog barks while rain falls on a tin roof"] * b
    out: dict[str, torch.Tensor] = {}

    def video():
        out["video"] = enc.video.encode(frames)

    def audio():
        out["audio"] = enc.audio.encode(log_mel(wave, spec))

    def text():
        out["text"], out["text_mask"] = enc.text.encode(texts)
        out["prior_text"], out["prior_text_mask"] = enc.prior_text.encode(texts)

    with torch.no_grad():
        seconds = {k: _timed(fn, 3) for k, fn in (("video_vae", video), ("audio_mel_vae", audio), ("text", text))}
    batch = {k: v.clone() for k, v in out.items()}  # the encoders run in inference mode; training needs plain tensors
    return {f"{k}_clips_per_s": round(b / s, 2) for k, s in seconds.items()}, batch


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


def bench_steps(name: str, batch: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    results = {}
    for stage in STAGES:
        before = _peak_mb()
        objective = _objective(stage, name)
        params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        data = dict(batch)
        if stage == "prior":  # the asynchronous pair: another clip's video with this audio
            data.update(neg_video=batch["video"].roll(1, dims=0), neg_audio=batch["audio"])
        gen, mask_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        step = functools.partial(train_step, objective, optimizer, params, data, gen, mask_gen, 1.0)
        seconds = _timed(step, args.steps)
        results[stage] = {
            "trainable_params": sum(p.numel() for p in params),
            "s_per_step": round(seconds, 4),
            "samples_per_s": round(args.batch_size / seconds, 2),
            "peak_rss_growth_mb": round(_peak_mb() - before, 1),
        }
        del objective, optimizer, step
    return results


def paper_memory() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("prior", "dit"):
        counts = count_parameters(kind, "paper")
        entry = {"total": counts["total"], "paper_units": counts["paper_units"]}
        for stage, trainable in (counts.get("trainable_by_stage") or {"prior": counts["trainable"]}).items():
            frozen = counts["total"] - trainable
            # fp32 weights for everything; gradients and two AdamW moments for the trained part
            entry[f"{stage}_fp32_gb"] = round((4 * frozen + 16 * trainable) / 1e9, 1)
        out[kind] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage (the fastest is kept)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    report: dict[str, Any] = {"preset": args.preset, "batch_size": args.batch_size}
    report["torch_threads"] = torch.get_num_threads()
    report["encode"], batch = bench_encode(args.preset, args)
    report["latent_shapes"] = {k: list(v.shape) for k, v in batch.items()}
    report["steps"] = bench_steps(args.preset, batch, args)
    report["paper_memory"] = paper_memory()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
