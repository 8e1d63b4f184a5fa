"""The JavisDiT++ training stages, run by the Ray Train machinery of ``model/train.py`` (issue #15).

=========  ===========================  ===================================  =====================================
stage      starts from                  trains (``freeze_for_ditpp_stage``)  data / objective
=========  ===========================  ===================================  =====================================
audio-pp   ``--wan-from`` (a diffusers  the audio-specific layers (audio     positives of the ``ditpp-<preset>``
           Wan2.1 transformer) or       FFN, embedding, output, ...); the    latents; rectified flow on audio only
           ``--init-from`` audio-pp     video path and shared layers frozen  (``video=None``)
sft        an audio-pp checkpoint       LoRA on the shared layers (rank and  positives; rectified flow on both,
           (``--init-from``)            alpha from the preset; our own       plain text-to-audio-video (no masking
                                        ``model/lora.py``, not peft)         tasks), condition dropout for CFG
dpo        an sft checkpoint            the sft LoRA                         preference pairs (``javis
                                                                             preference``); AV-DPO (``model/dpo.py``)
=========  ===========================  ===================================  =====================================

The dpo stage's policy and its frozen reference both start from the sft checkpoint's EMA weights,
which is what ``javis sample`` and ``javis preference`` generate from: the pairs are on-policy.
The reference is a full frozen copy (a second DiT in memory: at the paper size a LoRA-free view of
the shared base would save it; not needed at the sizes trained here). Pairs are held back for the
implicit reward margin by a stable hash of their ``pair_id`` (``holdout_pair_ids``).

Everything here is called from ``model/train.py``; this module never imports Ray Train.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import checkpoint as ckpt
from model.data import collate, collate_preference, load_preference_rows, preference_shards
from model.ditpp import (
    CHECKPOINT_MODEL,
    DITPP_STAGES,
    JavisDiTPP,
    ditpp_from_state_dict,
    ditpp_preset,
    freeze_for_ditpp_stage,
    load_wan_transformer,
)
from model.dpo import DPOObjective
from model.flow import training_loss
from schemas.preference import MANIFEST_FILE, PrefCol

log = logging.getLogger(__name__)

STAGES = DITPP_STAGES
PREVIOUS = {"audio-pp": (), "sft": ("audio-pp",), "dpo": ("sft",)}  # a stage may also continue itself
MODEL = CHECKPOINT_MODEL
HOLDOUT_FRACTION = 0.2  # dpo: pairs held back when holdout_pairs is None (at least one)


def spec_name(preset: str) -> str:
    return f"ditpp-{preset}"


# ---------------------------------------------------------------- inputs


def data_folder(config) -> Path:
    """dpo: the preference folder; else the ``ditpp-<preset>`` latents folder of ``config.data``
    (or ``data`` itself when it is one). Clear errors when absent."""
    from model.latents import latent_shards
    from model.train import _holds_latents  # train.py imports this module at its top: import here

    data = Path(config.data).resolve()
    if config.stage == "dpo":
        preference_shards(data)
        return data
    if _holds_latents(data):
        return data
    from model.latents import latents_dir_name

    name = spec_name(config.preset)
    folder = data / latents_dir_name(name)
    if latent_shards(folder):
        return folder
    raise FileNotFoundError(f"{data} has no {name} latents: run `javis latents {data} --preset {name}` first")


def check_inputs(config, data_dir: Path) -> None:
    """User mistakes, as ValueErrors, before any worker starts: latents or pairs of another spec,
    a missing or wrong previous-stage checkpoint, a preset mismatch."""
    from model.latents import made_with_spec

    want = spec_name(config.preset)
    if config.stage == "dpo":
        _check_pairs(data_dir, want)
    else:
        made = made_with_spec(data_dir)
        if made is not None and made != want:
            raise ValueError(f"the latents in {data_dir} were made for spec {made}; the {config.stage} stage with "
                             f"--preset {config.preset} needs `javis latents --preset {want}`")  # fmt: skip
    if config.stage in ("sft", "dpo") and not config.init_from:
        raise ValueError(f"{config.stage} starts from a {PREVIOUS[config.stage][0]} checkpoint: pass --init-from")
    if config.wan_from and config.stage != "audio-pp":
        raise ValueError("--wan-from initialises the audio-pp stage only; later stages start from --init-from")
    if config.init_from:
        meta = ckpt.read_meta(ckpt.resolve_checkpoint(config.init_from))
        allowed = PREVIOUS[config.stage] + (config.stage,)
        if meta.get("model") != MODEL or meta.get("stage") not in allowed:
            raise ValueError(f"{config.stage} starts from a {' or '.join(allowed)} checkpoint; --init-from "
                             f"{config.init_from} is a {meta.get('model', 'javisdit')} {meta.get('stage')} one")
        if meta.get("preset", config.preset) != config.preset:
            raise ValueError(f"--init-from {config.init_from} was trained with preset {meta['preset']}, "
                             f"--preset {config.preset} given")  # fmt: skip


def _check_pairs(pref_dir: Path, want: str) -> None:
    """The pairs' latents must fit the model: the spec ``javis preference`` recorded in the
    manifest (``latent_spec``), and the first pair's tensor shapes (video channels, text width),
    read from the shape columns alone."""
    import pyarrow.parquet as pq

    from model.spec import latent_spec
    from schemas.latents import shape_column

    manifest = pref_dir / MANIFEST_FILE
    named = json.loads(manifest.read_text()).get("latent_spec") if manifest.is_file() else None
    if named is not None and named != want:
        raise ValueError(f"the preference pairs in {pref_dir} hold {named} latents, --preset needs {want}")
    spec = latent_spec(want)
    columns = [shape_column(PrefCol.WINNER_VIDEO), shape_column(PrefCol.TEXT)]
    shapes = pq.read_table(preference_shards(pref_dir), columns=columns)
    if shapes.num_rows == 0:
        raise ValueError(f"{pref_dir} holds no preference pairs: `javis preference` formed none (its decisions.parquet "
                         "says why; candidates of a barely trained model may need lower ranking.* margins)")
    row = shapes.slice(0, 1).to_pylist()[0]
    channels, text_dim = row[columns[0]][0], row[columns[1]][-1]
    if (channels, text_dim) != (spec.video_channels, spec.text_dim):
        raise ValueError(f"the preference pairs in {pref_dir} have {channels} video channels and text width "
                         f"{text_dim}; {want} needs {spec.video_channels} and {spec.text_dim}")  # fmt: skip


def encoders_kind(config, data_dir: Path) -> str:
    """Which text encoders sampling needs: the latents' manifest, or for dpo the sft checkpoint's."""
    from model.latents import MANIFEST

    if config.stage == "dpo":
        return ckpt.read_meta(ckpt.resolve_checkpoint(config.init_from)).get("encoders", "tiny")
    manifest = data_dir / MANIFEST
    return json.loads(manifest.read_text()).get("encoders", "tiny") if manifest.is_file() else "tiny"


def holdout_pair_ids(pref_dir: Path, count: int | None, workers: int) -> list[str]:
    """``count`` pairs (None: 20 %, at least one) picked by a hash of their id: stable as data grows."""
    import pyarrow.parquet as pq

    ids = sorted(set(pq.read_table(preference_shards(pref_dir), columns=[PrefCol.PAIR_ID])
                     .column(PrefCol.PAIR_ID).to_pylist()))  # fmt: skip
    count = max(1, round(HOLDOUT_FRACTION * len(ids))) if count is None else count
    if len(ids) - count < workers:
        raise ValueError(f"{pref_dir} has {len(ids)} preference pairs: too few to hold back {count} and still give "
                         f"each of {workers} workers one (set --holdout-pairs, or make more pairs)")  # fmt: skip
    return sorted(ids, key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())[:count]


def holdout(config, data_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """dpo: (held-back pair ids, their rows); the other stages hold nothing back."""
    if config.stage != "dpo":
        return [], []
    held = holdout_pair_ids(data_dir, config.holdout_pairs, config.workers)
    return held, load_preference_rows(data_dir, held)


def dataset(config, data_dir: Path, held: list[str]):
    """The Ray Dataset of training rows: latent positives, or the preference pairs not held back."""
    from model.data import latent_dataset, preference_dataset

    if config.stage != "dpo":
        ds = latent_dataset(data_dir, "positives")
    else:
        held_set = frozenset(held)
        ds = preference_dataset(data_dir).filter(lambda row: row[PrefCol.PAIR_ID] not in held_set)
    return ds.materialize() if config.materialize else ds


def collate_fn(stage: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    return collate_preference if stage == "dpo" else collate


# ---------------------------------------------------------------- objectives


class PPFlowObjective(nn.Module):
    """audio-pp / sft: ``forward(batch, noise_gen, mask_gen) -> {"loss", "loss_video", "loss_audio"}``:
    rectified flow on audio only (audio-pp) or on both (sft), text dropped per ``draw_cond_drop``."""

    def __init__(self, stage: str, dit: nn.Module) -> None:
        super().__init__()
        self.stage, self.dit = stage, dit

    def forward(self, batch: dict[str, Any], noise_gen: torch.Generator, mask_gen: Any = None):
        video = None if self.stage == "audio-pp" else batch["video"]
        audio = batch["audio"]
        drop = self.dit.draw_cond_drop(audio.shape[0], generator=noise_gen, device=audio.device)
        return training_loss(self.dit, video, audio, batch["text"], batch["text_mask"], None, None,
                             cond_drop=drop, generator=noise_gen)


def _weights(path: str, ema: bool) -> dict[str, torch.Tensor]:
    """The DiT state dict of a checkpoint, its trained parameters swapped for their EMA if asked."""
    init = ckpt.load_weights(path)
    weights = dict(init["dit"])
    if ema and init.get("dit_ema"):
        weights.update(init["dit_ema"])
    return weights


def build_objective(config) -> tuple[nn.Module, dict[str, Any]]:
    """The stage's objective, with weights from ``init_from`` / ``wan_from``; seeded by
    ``config.seed`` so every rank builds the same. Returns it and the checkpoint extras."""
    torch.manual_seed(config.seed)
    cfg = ditpp_preset(config.preset)
    if config.init_from:
        dit = ditpp_from_state_dict(cfg, _weights(config.init_from, ema=config.stage == "dpo"))
    else:
        dit = JavisDiTPP(cfg)
        if config.wan_from:
            load_wan_transformer(dit, config.wan_from)
        else:
            log.warning("audio-pp without --wan-from: the shared and video layers are random, not Wan2.1's")
    if config.stage == "sft":
        dit.add_lora()  # rank/alpha/targets of the preset; a no-op when continuing an sft checkpoint
    freeze_for_ditpp_stage(dit, config.stage)
    if config.stage == "dpo":
        reference = copy.deepcopy(dit)
        return DPOObjective(dit, reference, config.beta), {"dit_from": None}
    return PPFlowObjective(config.stage, dit), {"dit_from": None}
