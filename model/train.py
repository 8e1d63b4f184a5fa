"""Distributed training of the ST-Prior estimator and JavisDiT on Ray Train (JavisDiT sec. 3.3, C.1).

Four stages, each started from the previous one's checkpoint (``TrainConfig.init_from``):

=========  ======================================================  ============================
stage      trains (``freeze_for_stage``)                           data / objective
=========  ======================================================  ============================
video      video branch + shared timestep layers (stands in for     positives; rectified flow on
           the OpenSora v1.2 checkpoint the paper starts from)      video only
audio      audio branch, copied from the video branch first         positives; flow on audio only
           (``init_audio_from_video``)                              (the video branch is not run)
prior      ST-Prior estimator + VA encoder (+ discriminator)        pairs (clip, hard negative);
                                                                    ``prior_loss``
joint      ST-prior cross-attention, Bi-CrossAttn                   positives; flow on both, prior
                                                                    from the frozen estimator
=========  ======================================================  ============================

The audio stage feeds no video (``video=None``): a single-branch pass skips Bi-CrossAttn, whose
gates are zero at that point anyway, so the audio branch learns text-to-audio on its own, as the
paper's audio pretraining does, at half the cost. The video and audio stages pass no prior (its
cross-attention is a zero-initialised no-op until the joint stage trains it). Dynamic temporal
masking (``model/masking.py``) draws x-conditional tasks per sample; single-branch stages use the
tasks that condition only their own modality.

Ray Train: a ``TorchTrainer`` with ``workers`` workers (gloo on CPU, NCCL on GPU), DDP through
``prepare_model``; ``parallel="fsdp"`` wraps with FSDP instead, for the paper DiT on GPUs whose
memory cannot hold the 3.1B parameters plus AdamW state per rank (about 50 GB in fp32): it is not
tested here (no GPU), and its checkpoints gather full state dicts on rank 0. The Ray Dataset of
latent rows is split across workers (``get_dataset_shard``) and repeated as epochs until ``steps``;
every rank steps in lockstep (see :class:`ShardStream`).

The JavisDiT++ stages ``audio-pp``, ``sft`` and ``dpo`` (``model/train_ditpp.py``: their models,
objectives, data and input checks) run through the same loop, checkpoints, EMA and resume.
This module is over 400 lines because the loop, its data stream and the driver belong together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import checkpoint as ckpt
from model import train_ditpp as pp
from model.data import collate, iter_bucketed_batches, load_rows, rows_from_batches, to_device
from model.dpo import DEFAULT_BETA
from model.ema import EMA
from model.flow import training_loss
from model.javisdit import STAGES, JavisDiT, freeze_for_stage, init_audio_from_video
from model.masking import MaskingConfig, draw_condition_masks
from model.presets import Preset
from model.presets import preset as load_preset
from model.st_prior import STPriorEstimator, VAEncoder, margin, prior_loss
from schemas.latents import LatCol

log = logging.getLogger(__name__)

# tasks for the single-branch stages: only those that condition the branch's own modality
STAGE_MASKING = {
    "video": MaskingConfig(probs={"t2av": 0.7, "i2av": 0.15, "extension": 0.15}),
    "audio": MaskingConfig(probs={"t2av": 0.7, "extension": 0.3}),
    "joint": MaskingConfig(),  # the paper's 70% text-to-audio-video, 30% spread over the rest
}
PREVIOUS = {"audio": ("video",), "prior": ("audio", "joint", "video"), "joint": ("prior",)}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training stage. ``data`` is a curated output folder holding ``latents/`` (``javis latents``)."""

    stage: str  # video | audio | prior | joint (JavisDiT) | audio-pp | sft | dpo (JavisDiT++)
    data: str  # curated output folder with latents/ (or the latents folder itself); dpo: a preference folder
    output: str  # run folder: checkpoints land in <output>/checkpoint_<step>/
    preset: str = "tiny"  # model sizes: tiny | paper
    steps: int = 100  # total optimizer steps of the stage (a resumed run continues up to this)
    batch_size: int = 2  # per worker
    lr: float = 1e-4  # AdamW (JavisDiT trains at 1e-4)
    weight_decay: float = 0.0  # OpenSora/JavisDiT use none
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.99  # OpenSora uses 0.99; the EMA covers the trained parameters only
    mixed_precision: bool = True  # bf16 autocast, on CUDA only (CPU runs stay fp32)
    seed: int = 0  # model init seed; rank r draws noise/timesteps/masks from seed + r
    workers: int = 2  # Ray Train workers
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: float = 1.0  # leave CPUs for Ray Data's read tasks on small machines
    parallel: str = "ddp"  # ddp | fsdp (untested: see the module docstring)
    checkpoint_every: int = 1000  # steps between checkpoints (one is always written at the end)
    log_every: int = 10  # steps between printed losses (rank 0)
    keep_checkpoints: int | None = None  # Ray Train keeps this many latest checkpoints (None = all)
    init_from: str | None = None  # checkpoint (or run folder) of the previous stage
    prior_from: str | None = None  # joint: ST-Prior checkpoint, when init_from is not a prior-stage one
    holdout_clips: int | None = None  # clips held back for the prior margin (None: 1 for prior, else 0)
    ray_address: str | None = None  # Ray cluster to join; None starts (or reuses) a local Ray
    materialize: bool = True  # hold the latent rows in the object store (False: stream, for data > memory)
    shuffle_buffer: int = 256  # rows shuffled per worker and epoch, seeded by (seed, epoch, rank); 0: data order
    wan_from: str | None = None  # audio-pp: a local diffusers Wan2.1 transformer folder (shared + video weights)
    beta: float = DEFAULT_BETA  # dpo: the DPO temperature (model/dpo.py says why this default)
    holdout_pairs: int | None = None  # dpo: pairs held back for the reward margin (None: 20 %, at least 1)

    def __post_init__(self) -> None:
        if self.stage not in STAGES + pp.STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {STAGES + pp.STAGES}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if min(self.steps, self.batch_size, self.workers, self.log_every, self.checkpoint_every) < 1:
            raise ValueError("steps, batch_size, workers, log_every and checkpoint_every must be positive")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.shuffle_buffer < 0:
            raise ValueError("shuffle_buffer must be >= 0")
        object.__setattr__(self, "betas", tuple(self.betas))
        # unknown preset -> ValueError now, not inside a worker
        pp.ditpp_preset(self.preset) if self.stage in pp.STAGES else load_preset(self.preset)

    @property
    def num_holdout_clips(self) -> int:
        return self.holdout_clips if self.holdout_clips is not None else int(self.stage == "prior")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def latents_folder(data: str | os.PathLike) -> Path:
    """``<data>/latents`` (or ``data`` itself when it is a latents folder); a clear error if absent.
    A curated run's own ``shards/`` (clips, not latents) do not make it a latents folder."""
    from model.latents import LATENTS_DIR, latent_shards

    data = Path(data).resolve()
    if not (data / LATENTS_DIR).is_dir() and _holds_latents(data):
        return data
    folder = data / LATENTS_DIR
    if not latent_shards(folder):
        raise FileNotFoundError(f"{data} has no latents: run `javis latents {data}` first")
    return folder


def _holds_latents(folder: Path) -> bool:
    import pyarrow.parquet as pq

    from model.latents import latent_shards

    shards = latent_shards(folder)
    return bool(shards) and LatCol.CLIP_ID in pq.read_schema(shards[0]).names


def check_inputs(config: TrainConfig, latents_dir: Path) -> None:
    """User mistakes that would otherwise surface as a shape error inside a worker: latents made
    for another preset, a prior stage without negatives, checkpoints of another preset."""
    import pyarrow.parquet as pq

    from model.latents import latent_shards, made_with_spec

    made = made_with_spec(latents_dir)
    if made is not None and made.startswith("ditpp-"):
        raise ValueError(f"the latents in {latents_dir} were made for JavisDiT++ ({made}): train them with the "
                         f"audio-pp, sft and dpo stages, or make JavisDiT latents with `javis latents --preset "
                         f"{config.preset}`")  # fmt: skip
    if made is not None and made != config.preset:
        raise ValueError(f"the latents in {latents_dir} were made for preset {made}, --preset {config.preset} "
                         f"given: train with --preset {made}, or make latents with `javis latents --preset "
                         f"{config.preset}`")  # fmt: skip
    if config.stage == "prior":
        kinds = pq.read_table(latent_shards(latents_dir), columns=[LatCol.KIND]).column(LatCol.KIND).to_pylist()
        if "negative" not in kinds:
            raise ValueError(f"{config.data} has no latents of hard negatives: run `javis augment {config.data}`, "
                             f"then `javis latents {config.data}` again")  # fmt: skip
    for option, path in (("--init-from", config.init_from), ("--prior-from", config.prior_from)):
        trained = ckpt.read_meta(ckpt.resolve_checkpoint(path)).get("preset") if path else None
        if trained is not None and trained != config.preset:
            raise ValueError(f"{option} {path} was trained with preset {trained}, --preset {config.preset} given")


# ---------------------------------------------------------------- objectives (one nn.Module for DDP)


class FlowObjective(nn.Module):
    """video/audio/joint: ``forward(batch, noise_gen, mask_gen) -> {"loss", "loss_video", "loss_audio"}``.
    Holds the DiT and, for joint, the frozen ST-Prior estimator whose samples condition it."""

    def __init__(self, stage: str, dit: JavisDiT, estimator: STPriorEstimator | None) -> None:
        super().__init__()
        self.stage, self.dit, self.estimator = stage, dit, estimator
        self.masking = dataclasses.replace(STAGE_MASKING[stage], audio_frame_quantum=dit.config.audio_patch[0])

    def forward(self, batch: dict[str, Any], noise_gen: torch.Generator, mask_gen: torch.Generator):
        video = batch["video"] if self.stage in ("video", "joint") else None
        audio = batch["audio"] if self.stage in ("audio", "joint") else None
        ref = video if video is not None else audio
        masks = draw_condition_masks(ref.shape[0], batch["video"].shape[2], batch["audio"].shape[2], self.masking,
                                     generator=mask_gen, device=ref.device)
        prior_s = prior_t = None
        if self.estimator is not None:
            with torch.no_grad():
                prior = self.estimator(batch["prior_text"], batch["prior_text_mask"], generator=noise_gen)
            prior_s, prior_t = prior.spatial, prior.temporal
        drop = self.dit.draw_cond_drop(ref.shape[0], generator=noise_gen, device=ref.device)
        return training_loss(self.dit, video, audio, batch["text"], batch["text_mask"], prior_s, prior_t,
                             video_cond_mask=masks.video if video is not None else None,
                             audio_cond_mask=masks.audio if audio is not None else None,
                             cond_drop=drop, generator=noise_gen)


class PriorObjective(nn.Module):
    """prior: ``forward(batch, noise_gen, mask_gen) -> prior_loss`` terms; positives are the clip's
    (video, audio), negatives its asynchronous pair (``neg_video``, ``neg_audio``)."""

    def __init__(self, estimator: STPriorEstimator, va_encoder: VAEncoder) -> None:
        super().__init__()
        self.estimator, self.va_encoder = estimator, va_encoder
        self.weights = estimator.config.loss

    def forward(self, batch: dict[str, Any], noise_gen: torch.Generator, mask_gen: torch.Generator | None = None):
        prior = self.estimator(batch["prior_text"], batch["prior_text_mask"], generator=noise_gen)
        pos = self.va_encoder(batch["video"], batch["audio"])
        neg = self.va_encoder(batch["neg_video"], batch["neg_audio"])
        return prior_loss(prior, pos, neg, self.weights, discriminator=self.va_encoder.discriminator)

    @torch.no_grad()
    def margin(self, batches: list[dict[str, Any]], device: torch.device) -> float:
        """Mean positive-vs-negative margin (``st_prior.margin``), weighted by batch size."""
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        for batch in batches:
            b = to_device(batch, device)
            prior = self.estimator(b["prior_text"], b["prior_text_mask"])
            value = margin(prior, self.va_encoder(b["video"], b["audio"]), self.va_encoder(b["neg_video"], b["neg_audio"]))
            total, count = total + float(value) * len(b["ids"]), count + len(b["ids"])
        self.train(was_training)
        return total / max(count, 1)


def build_objective(config: TrainConfig, presets: Preset) -> tuple[nn.Module, dict[str, Any]]:
    """The stage's objective with weights from ``init_from``/``prior_from``; returns it and
    ``{"dit_from"}`` for the checkpoint. Seeded by ``config.seed``: every rank builds the same."""
    torch.manual_seed(config.seed)
    init = ckpt.load_weights(config.init_from) if config.init_from else None
    if init is not None and init["stage"] not in PREVIOUS.get(config.stage, ()) + (config.stage,):
        raise ValueError(f"{config.stage} starts from a {PREVIOUS.get(config.stage)} checkpoint, "
                         f"{config.init_from} is a {init['stage']} one")
    if config.stage == "prior":
        estimator, va_encoder = STPriorEstimator(presets.prior), VAEncoder(presets.prior)
        if init is not None and "estimator" in init:  # continuing a prior run from another run folder
            estimator.load_state_dict(init["estimator"])
            va_encoder.load_state_dict(init["va_encoder"])
        dit_from = (init.get("path") if "dit" in init else None) if init is not None else None
        objective: nn.Module = PriorObjective(estimator, va_encoder)
        freeze_for_stage(estimator, "prior")
        freeze_for_stage(va_encoder, "prior")
        return objective, {"dit_from": dit_from}
    dit = JavisDiT(presets.dit)
    if init is not None and "dit" in init:
        dit.load_state_dict(init["dit"])
    elif config.stage != "video":
        log.warning("%s stage without a DiT checkpoint: the DiT starts from random weights", config.stage)
    if config.stage == "audio" and (init is None or init["stage"] == "video"):
        init_audio_from_video(dit)  # paper sec. 3.3: the audio branch starts as a copy of the video branch
    estimator = None
    if config.stage == "joint":
        source = ckpt.load_weights(config.prior_from) if config.prior_from else init
        if source is None or "estimator" not in source:
            raise ValueError("joint training needs an ST-Prior: init_from a prior-stage checkpoint or set prior_from")
        estimator = STPriorEstimator(presets.prior)
        estimator.load_state_dict(source["estimator"])
        freeze_for_stage(estimator, "joint")
        estimator.eval()
    freeze_for_stage(dit, config.stage)
    return FlowObjective(config.stage, dit, estimator), {"dit_from": None}


# ---------------------------------------------------------------- data


def _all_ranks(flag: bool, device: torch.device) -> bool:
    """True only when ``flag`` is True on every rank (a no-op without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def shuffled(rows: Any, buffer: int, seed: int) -> Any:
    """``rows`` in a seeded random order, holding at most ``buffer`` rows: the same input order
    and seed give the same output order, which is what makes a saved data position resumable."""
    import random

    if buffer <= 1:
        yield from rows
        return
    rng, held = random.Random(seed), []
    for row in rows:
        held.append(row)
        if len(held) >= buffer:
            i = rng.randrange(len(held))
            held[i], held[-1] = held[-1], held[i]
            yield held.pop()
    rng.shuffle(held)
    yield from held


class ShardStream:
    """Endless bucketed batches from a worker's dataset shard, epoch after epoch.

    Ranks move in lockstep: a batch is used only when every rank has one (``_all_ranks``); as soon
    as one rank's epoch runs out, all start the next epoch together (the rest of the longer shards
    is dropped, as ``drop_last`` would). That keeps DDP's collectives matched and lets Ray Data's
    split coordinator start each epoch for all shards at once. ``(epoch, batch_index)`` is the
    position: ``batch_index`` batches of ``epoch`` consumed; a stream built at a saved position
    replays and drops that many batches (Train's ingest preserves order and each epoch's shuffle is
    seeded by ``(seed, epoch, rank)``, so they are usually the same ones). Ray's streaming split
    hands blocks to whichever worker asks first, so under load a rank can get other rows than in
    the saved run and the epoch can end before the saved position: the stream then goes on from
    the start of the next epoch with a warning, rather than failing the resumed run.
    """

    def __init__(self, shard: Any, batch_size: int, device: torch.device, epoch: int = 0, batch_index: int = 0,
                 *, shuffle_buffer: int = 0, seed: int = 0, rank: int = 0, collate_fn=collate) -> None:
        self.shard, self.batch_size, self.device, self.collate_fn = shard, batch_size, device, collate_fn
        self.shuffle_buffer, self.seed, self.rank = shuffle_buffer, seed, rank
        self.epoch, self.batch_index = epoch, 0
        self._open()
        for _ in range(batch_index):
            self.next()
        if (self.epoch, self.batch_index) != (epoch, batch_index):
            log.warning("the data position %s could not be replayed (the workers' shards differ from the saved "
                        "run's): continuing at %s", (epoch, batch_index), (self.epoch, self.batch_index))

    def _open(self) -> None:
        rows = rows_from_batches(self.shard.iter_batches(batch_size=64, batch_format="pyarrow"))
        rows = shuffled(rows, self.shuffle_buffer, hash((self.seed, self.epoch, self.rank)))
        self._batches = iter_bucketed_batches(rows, self.batch_size, drop_last=False, collate_fn=self.collate_fn)

    def next(self) -> dict[str, Any]:
        for _ in range(2):
            batch = next(self._batches, None)
            if _all_ranks(batch is not None, self.device):
                self.batch_index += 1
                return batch
            self.epoch, self.batch_index = self.epoch + 1, 0
            self._open()
        raise RuntimeError("a worker's data shard yields no batch: fewer latent rows than workers?")


def holdout_clip_ids(latents_dir: Path, count: int) -> list[str]:
    """``count`` clips that have negatives, picked by a hash of their id (stable as data grows)."""
    if count <= 0:
        return []
    import pyarrow.parquet as pq

    from model.latents import latent_shards

    table = pq.read_table(latent_shards(latents_dir), columns=[LatCol.CLIP_ID, LatCol.KIND])
    with_negatives = sorted({c for c, k in zip(table.column(LatCol.CLIP_ID).to_pylist(),
                                               table.column(LatCol.KIND).to_pylist()) if k == "negative"})
    if len(with_negatives) <= count:
        raise ValueError(f"cannot hold back {count} of {len(with_negatives)} clips with negatives and still train")
    return sorted(with_negatives, key=lambda c: hashlib.blake2b(c.encode(), digest_size=8).hexdigest())[:count]


# ---------------------------------------------------------------- the per-worker loop


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], batch: dict[str, Any],
               noise_gen: torch.Generator, mask_gen: torch.Generator, grad_clip: float,
               amp: contextlib.AbstractContextManager | None = None) -> dict[str, torch.Tensor]:
    """One optimizer step of an objective (wrapped or not), the forward under ``amp``; returns its terms."""
    with amp or contextlib.nullcontext():
        out = model(batch, noise_gen, mask_gen)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return out



def _state_for_checkpoint(objective: nn.Module, optimizer, ema: EMA, progress: dict, config: TrainConfig,
                          extra: dict) -> dict[str, Any]:  # fmt: skip
    parts = ("dit", "estimator", "va_encoder")
    if isinstance(objective, PriorObjective):
        parts = ("estimator", "va_encoder")  # the prior stage links to its DiT (``dit_from``)
    weights = {name: getattr(objective, name).state_dict() for name in parts if getattr(objective, name, None) is not None}
    return {"weights": weights, "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "config": config.to_json(), **progress, **extra}


def _train_loop(loop_config: dict[str, Any]) -> None:  # one per Ray Train worker
    import ray.train
    import ray.train.torch

    config = TrainConfig(**loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if config.stage in pp.STAGES:
        objective, extra = pp.build_objective(config)
    else:
        objective, extra = build_objective(config, load_preset(config.preset))
    collate_fn = pp.collate_fn(config.stage)
    extra["encoders"] = loop_config["encoders"]  # which text encoders sampling needs
    progress = {"step": 0, "epoch": 0, "batch_index": 0}
    resume = ray.train.get_checkpoint()  # Ray restores the run folder's latest checkpoint on a rerun
    state = None
    if resume is not None:
        with resume.as_directory() as folder:
            state = ckpt.load_state(folder)
        for name, weights in state["weights"].items():
            getattr(objective, name).load_state_dict(weights)
        progress = {k: state[k] for k in progress}
        extra["dit_from"] = state.get("dit_from")
    objective.to(device)
    ema = EMA(objective, config.ema_decay)  # before wrapping: names without the DDP "module." prefix
    if state is not None:
        ema.load_state_dict(state["ema"])
    kwargs = {} if config.parallel == "ddp" else {"use_orig_params": True}  # FSDP: frozen and trained mixed
    model = ray.train.torch.prepare_model(objective, parallel_strategy=config.parallel, parallel_strategy_kwargs=kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    start = progress["step"]
    # per-rank streams that differ between ranks and between a run and its resumption
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + rank + 1_000_003 * start)
    mask_gen = torch.Generator().manual_seed(config.seed + rank + 1_000_003 * start)
    stream = ShardStream(ray.train.get_dataset_shard("train"), config.batch_size, device,
                         progress["epoch"], progress["batch_index"],
                         shuffle_buffer=config.shuffle_buffer, seed=config.seed, rank=rank, collate_fn=collate_fn)
    holdout = list(iter_bucketed_batches(loop_config["holdout_rows"], config.batch_size, drop_last=False,
                                         collate_fn=collate_fn))  # fmt: skip
    metrics: dict[str, Any] = {"stage": config.stage, "start_step": start, "start_epoch": progress["epoch"],
                               "start_batch_index": progress["batch_index"]}
    if holdout and rank == 0:
        metrics["margin_before"] = objective.margin(holdout, device)
    use_amp = config.mixed_precision and device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else None
    losses: list[float] = []
    last_saved = start  # losses since the previous checkpoint go into the next one's meta.json
    model.train()
    for step in range(start + 1, config.steps + 1):
        batch = to_device(stream.next(), device)
        out = train_step(model, optimizer, params, batch, noise_gen, mask_gen, config.grad_clip, amp)
        ema.update(objective)
        loss = out["loss"].detach().float().reshape(1)
        if world > 1:
            torch.distributed.all_reduce(loss)  # the mean over ranks is what gets logged
            loss /= world
        losses.append(float(loss))
        if rank == 0 and (step % config.log_every == 0 or step == start + 1):
            terms = " ".join(f"{k}={float(v):.4f}" for k, v in out.items() if k != "loss")
            print(f"[{config.stage}] step {step}/{config.steps} epoch {stream.epoch} loss {losses[-1]:.5f} {terms}",
                  flush=True)
        if step % config.checkpoint_every == 0 or step == config.steps:
            if step == config.steps and holdout and rank == 0:
                metrics["margin_after"] = objective.margin(holdout, device)
            progress = {"step": step, "epoch": stream.epoch, "batch_index": stream.batch_index}
            _report(objective, optimizer, ema, progress, config, extra, rank,
                    {**metrics, **progress, "loss": losses[-1], "losses": losses},
                    losses[last_saved - start:])
            last_saved = step


def _report(objective, optimizer, ema, progress, config, extra, rank, metrics, recent_losses) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint."""
    import ray.train

    state = _state_for_checkpoint(objective, optimizer, ema, progress, config, extra)  # FSDP: collective
    name = ckpt.checkpoint_name(progress["step"])
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    meta = {"stage": config.stage, "model": pp.MODEL if config.stage in pp.STAGES else "javisdit",
            "preset": config.preset, "encoders": extra["encoders"], **progress,
            "losses": recent_losses, **{k: metrics[k] for k in ("margin_before", "margin_after") if k in metrics}}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt.save_checkpoint(tmp, state, meta)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)


# ---------------------------------------------------------------- the driver


def _encoders_kind(latents_dir: Path) -> str:
    from model.latents import MANIFEST

    manifest = latents_dir / MANIFEST
    return json.loads(manifest.read_text()).get("encoders", "tiny") if manifest.exists() else "tiny"


def _dataset(config: TrainConfig, latents_dir: Path, held: list[str]):
    from model.data import latent_dataset

    ds = latent_dataset(latents_dir, "pairs" if config.stage == "prior" else "positives")
    if held:
        held_set = frozenset(held)
        ds = ds.filter(lambda row: row[LatCol.CLIP_ID] not in held_set)
    # read, filter and pair once: each epoch then only re-splits blocks already in the object store,
    # instead of re-running the Parquet read and the pairing shuffle every epoch
    return ds.materialize() if config.materialize else ds


def train(config: TrainConfig, resume: bool | None = None) -> dict[str, Any]:
    """Run one stage on Ray Train; returns ``{"stage", "steps", "first_loss", "last_loss",
    "checkpoint", "losses", "start_step", ...}`` (+ ``margin_before``/``margin_after`` for prior).

    ``resume``: None continues from the run folder's latest checkpoint when there is one; True
    requires one; False refuses a run folder that already has checkpoints.
    """
    import ray
    from ray.train import CheckpointConfig, DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ditpp = config.stage in pp.STAGES
    latents_dir = pp.data_folder(config) if ditpp else latents_folder(config.data)  # dpo: the preference folder
    run_dir = Path(config.output).resolve()
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is not None and resume is False:
        raise ValueError(f"{run_dir} already has checkpoints; resume it or choose another output folder")
    if latest is None and resume is True:
        raise FileNotFoundError(f"nothing to resume in {run_dir}")
    if latest is not None:
        meta = ckpt.read_meta(latest)
        if meta["stage"] != config.stage:
            raise ValueError(f"{run_dir} holds a {meta['stage']} run, not {config.stage}")
        if meta.get("preset", config.preset) != config.preset:
            raise ValueError(f"{run_dir} holds a run with preset {meta['preset']}, --preset {config.preset} given")
        if meta["step"] >= config.steps:
            log.warning("%s is already at step %d >= %d: nothing to do", run_dir, meta["step"], config.steps)
            return {"stage": config.stage, "steps": meta["step"], "first_loss": None, "last_loss": None,
                    "checkpoint": str(latest), "losses": [], "start_step": meta["step"]}
    config = dataclasses.replace(
        config, data=str(Path(config.data).resolve()), output=str(run_dir),
        init_from=str(ckpt.resolve_checkpoint(config.init_from)) if config.init_from else None,
        prior_from=str(ckpt.resolve_checkpoint(config.prior_from)) if config.prior_from else None,
        wan_from=str(Path(config.wan_from).resolve()) if config.wan_from else None)
    if ditpp:
        pp.check_inputs(config, latents_dir)
        held, holdout_rows = pp.holdout(config, latents_dir)
    else:
        check_inputs(config, latents_dir)
        held = holdout_clip_ids(latents_dir, config.num_holdout_clips)
        holdout_rows = [r for r in load_rows(latents_dir, "pairs") if r[LatCol.CLIP_ID] in set(held)] if held else []

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=config.ray_address or "local", include_dashboard=False)
        started = True
    # the loss lines are the progress report: no Ray Data bars for every epoch's split
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ingest = DataConfig.default_ingest_options()
        ingest.preserve_order = True  # the same rows in the same order each epoch: resumable positions
        resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})}
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"config": config.to_json(), "holdout_rows": holdout_rows,
                               "encoders": pp.encoders_kind(config, latents_dir) if ditpp else _encoders_kind(latents_dir)},
            torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(name=run_dir.name, storage_path=str(run_dir.parent),
                                 checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints)),
            datasets={"train": pp.dataset(config, latents_dir, held) if ditpp else _dataset(config, latents_dir, held)},
            dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest),
        )  # fmt: skip
        result = trainer.fit()
    finally:
        if started:
            ray.shutdown()
    metrics = result.metrics or {}
    losses = metrics.get("losses", [])
    summary = {"stage": config.stage, "steps": metrics.get("step"), "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None,
               "checkpoint": str(ckpt.latest_checkpoint(run_dir) or (result.checkpoint and result.checkpoint.path)),
               **{k: metrics[k] for k in ("margin_before", "margin_after", "start_step", "start_epoch",
                                           "start_batch_index", "epoch", "batch_index") if k in metrics},
               "losses": losses, ("holdout_pairs" if config.stage == "dpo" else "holdout_clips"): held}  # fmt: skip
    return summary
