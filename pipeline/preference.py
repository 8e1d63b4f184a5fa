"""``javis preference``: preference pairs for AV-DPO from a trained checkpoint, on Ray Data.

prompts (a curated run's accepted clips' captions, or a prompt file; deduplicated, ids =
blake2b of the text) -> K candidates per prompt, generated in an actor pool (``map_batches`` with
:class:`GenerateCandidates`, ``num_gpus`` per actor) that writes each candidate's MP4 (H.264 + AAC)
to ``PREF/media/candidates/<prompt_id>/<candidate_id>.mp4`` and its latents and text states to
``PREF/latents/<prompt_id>/<candidate_id>.npz`` -> reward scoring in a second actor pool
(:class:`ScoreCandidates`, ``stages/rewards.py``; each candidate is scored from its MP4 as written)
-> on the driver: per prompt, normalise, rank and pair (``pipeline/preference_rank.py``) -> the
tables of ``schemas/preference.py``: ``pairs/shard-*.parquet``, ``candidates.parquet`` (every
candidate in exactly one state: paired, unpaired with a reason, failed with its stage),
``decisions.parquet``, ``prompts.parquet`` (the normalisation of each prompt) and, last,
``manifest.json`` (written last: its presence marks a finished run).

Only the small rows (ids, paths, errors, scores) travel through Ray to the driver; latents stay
on disk until the pair shards are written. A candidate whose generation or scoring fails is
recorded as failed and the run goes on. Candidate seeds derive from ``--seed``, the prompt id and
k, so a rerun with the same arguments samples the same candidates. Reruns into an existing
non-empty ``PREF`` are refused (no resume): generation is the costly part and a half-written
folder is cheaper to remove than to reconcile. ``PREF`` is a local (or mounted) folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.preference_rank import RankingConfig
from schemas import Col
from schemas.preference import MEDIA_DIR, CandCol
from stages.rewards import WEIGHTS, RewardsConfig

log = logging.getLogger(__name__)
LATENTS_DIR = "latents"
_MAX_ERROR_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    """Everything ``javis preference`` does besides where (``--set key=value`` overrides these)."""

    num_candidates: int = 4  # K per prompt (the paper ranks a handful per prompt)
    steps: int = 30  # Euler steps (paper: 30)
    cfg: float = 7.0  # CFG scale (paper: 7.0)
    seed: int = 0  # run seed: candidate seeds derive from it, the prompt id and k
    num_frames: int | None = None  # default: the checkpoint's shortest bucket
    resolution: tuple[int, int] | None = None  # (height, width); default: its first bucket's
    use_ema: bool = True
    batch_size: int = 4  # candidates per generation / scoring call
    num_workers: int = 1  # generation actors
    score_workers: int = 1  # scoring actors
    num_gpus: float = 0.0  # per generation actor (and per scoring actor when a reward runs on cuda)
    caption_column: str | None = None  # --data: default caption_merge_text, then src_title
    pairs_per_shard: int = 1024
    rewards: RewardsConfig = dataclasses.field(default_factory=RewardsConfig)
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)

    def __post_init__(self) -> None:
        if self.num_candidates < 2:
            raise ValueError(f"--candidates must be >= 2 to form a pair, got {self.num_candidates}")
        if self.steps < 1 or self.batch_size < 1 or self.num_workers < 1 or self.score_workers < 1:
            raise ValueError("steps, batch_size, num_workers and score_workers must be >= 1")
        if self.num_gpus < 0 or self.pairs_per_shard < 1:
            raise ValueError("num_gpus must be >= 0 and pairs_per_shard >= 1")
        if self.resolution is not None:
            object.__setattr__(self, "resolution", tuple(int(x) for x in self.resolution))


# ---------------------------------------------------------------- prompts


def prompt_id(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def candidate_seed(seed: int, pid: str, k: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{pid}:{k}".encode(), digest_size=4).digest(), "little")


def read_prompts(data: str | os.PathLike | None, prompts_file: str | os.PathLike | None,
                 caption_column: str | None = None) -> list[dict[str, str]]:  # fmt: skip
    """``[{"prompt_id", "prompt", "source"}]``, deduplicated in order of first appearance. From a
    run: each accepted clip's caption (``caption_column``, default ``caption_merge_text``), else its
    source title, as ``javis latents`` picks them; clips with neither are skipped."""
    found: list[tuple[str, str]] = []
    if prompts_file is not None:
        lines = Path(prompts_file).read_text(encoding="utf-8").splitlines()
        found = [(line.strip(), "prompt_file") for line in lines if line.strip()]
    else:
        from pipeline.outputs import read_shards, require_run

        clips = read_shards(require_run(data))
        column = caption_column or Col.CAPTION_MERGE_TEXT
        if caption_column and caption_column not in clips.column_names:
            raise ValueError(f"caption column {caption_column!r} is not in {data}/shards (annotation not run?)")
        for row in clips.sort_by(Col.ID).to_pylist():
            if row.get(column):
                found.append((row[column].strip(), column))
            elif row.get(Col.SRC_TITLE):
                found.append((row[Col.SRC_TITLE].strip(), Col.SRC_TITLE))
    seen: dict[str, dict[str, str]] = {}
    for text, source in found:
        if text and text not in seen:
            seen[text] = {"prompt_id": prompt_id(text), "prompt": text, "source": source}
    if not seen:
        if prompts_file is not None:
            raise ValueError(f"no prompts in {prompts_file}: it has no non-empty line")
        raise ValueError(f"no prompts in {data}: its accepted clips have no caption ({column}) and no source "
                         "title (captions come from `javis run --preset annotate`); pass --prompts FILE, one "
                         "prompt per line")  # fmt: skip
    return list(seen.values())


# ---------------------------------------------------------------- the actors


def _error(e: BaseException) -> dict[str, str]:
    return {CandCol.ERROR_TYPE: type(e).__name__, CandCol.ERROR_MESSAGE: (str(e) or repr(e))[:_MAX_ERROR_CHARS]}


_GEN_SCHEMA = pa.schema([(CandCol.CANDIDATE_ID, pa.string()), (CandCol.MEDIA, pa.string()), (CandCol.BUCKET, pa.string()),
                         ("latents_path", pa.string()), ("generator", pa.string()), (CandCol.ERROR_TYPE, pa.string()),
                         (CandCol.ERROR_MESSAGE, pa.string())])  # fmt: skip


class GenerateCandidates:
    """Loads the checkpoint once; maps a batch of ``{candidate_id, prompt_id, prompt, seed}`` to
    ``{candidate_id, media_path, bucket, latents_path, error_type, error_message}`` (a failed
    batch is retried one candidate at a time, so one bad candidate fails alone)."""

    def __init__(self, checkpoint: str, output: str, config: PreferenceConfig, encoder_paths: dict, device: str) -> None:
        from model.sample import Generator

        self.output, self.config = Path(output), config
        self.generator = Generator(checkpoint, device, encoder_paths, config.use_ema)
        sizes = dataclasses.asdict(self.generator.spec)
        self.describe = json.dumps({**self.generator.describe(), "latent_spec_sizes": sizes}, sort_keys=True)

    def _generate(self, items: list[dict]) -> list[dict]:
        c = self.config
        return self.generator.generate([i[CandCol.PROMPT] for i in items], [i[CandCol.SEED] for i in items],
                                       c.num_frames, c.resolution, c.steps, c.cfg)  # fmt: skip

    def _write(self, item: dict, result: dict) -> dict:
        from model.sample import write_mp4

        pid, cid = item[CandCol.PROMPT_ID], item[CandCol.CANDIDATE_ID]
        media, latents = f"{MEDIA_DIR}/{pid}/{cid}.mp4", f"{LATENTS_DIR}/{pid}/{cid}.npz"
        write_mp4(self.output / media, result["frames"], result["fps"], result["audio"], result["audio_rate_hz"])
        np.savez(self.output / latents, video_latent=result["video_latent"].numpy(),
                 audio_latent=result["audio_latent"].numpy(), text_states=result["text_states"].numpy(),
                 text_len=np.int32(result["text_len"]))  # fmt: skip
        bucket = f"{result['height']}x{result['width']}x{result['num_frames']}"
        return {CandCol.CANDIDATE_ID: cid, CandCol.MEDIA: media, CandCol.BUCKET: bucket, "latents_path": latents,
                "generator": self.describe}

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = batch.to_pylist()
        for item in items:
            (self.output / LATENTS_DIR / item[CandCol.PROMPT_ID]).mkdir(parents=True, exist_ok=True)
        try:
            results: list[Any] = self._generate(items)
        except Exception:  # the batch failed: find the candidates that fail on their own
            traceback.print_exc()
            results = []
            for item in items:
                try:
                    results.append(self._generate([item])[0])
                except Exception as e:  # the candidate boundary
                    results.append(e)
        rows = []
        for item, result in zip(items, results):
            try:
                if isinstance(result, Exception):
                    raise result
                rows.append(self._write(item, result))
            except Exception as e:  # the candidate boundary: recorded, the run goes on
                rows.append({CandCol.CANDIDATE_ID: item[CandCol.CANDIDATE_ID], **_error(e)})
        return pa.Table.from_pylist(rows, schema=_GEN_SCHEMA)


_SCORE_SCHEMA = pa.schema([(CandCol.CANDIDATE_ID, pa.string()), (CandCol.RAW, pa.string()), (CandCol.DETAILS, pa.string()),
                           ("reward_versions", pa.string()), (CandCol.ERROR_TYPE, pa.string()),
                           (CandCol.ERROR_MESSAGE, pa.string())])  # fmt: skip


class ScoreCandidates:
    """Loads the configured rewards once; maps generated candidates (their MP4s) to raw scores
    and details (JSON), or an error naming the reward that failed."""

    def __init__(self, output: str, config: RewardsConfig) -> None:
        from stages.rewards import build_rewards

        self.output, self.config = Path(output), config
        self.rewards = build_rewards(config)
        self.versions = json.dumps({r.name: r.version for r in self.rewards}, sort_keys=True)

    def _score_one(self, item: dict) -> dict:
        from stages.rewards import load_candidate

        candidate = load_candidate(str(self.output / item[CandCol.MEDIA]), item[CandCol.CANDIDATE_ID],
                                   item[CandCol.PROMPT], self.config)  # fmt: skip
        raw, details = {}, {}
        for reward in self.rewards:
            try:
                [score] = reward.score([candidate])
            except Exception as e:
                raise type(e)(f"reward {reward.name}: {e}") from e
            if not np.isfinite(score.value):
                raise ValueError(f"reward {reward.name} gave a non-finite score {score.value}")
            raw[reward.name], details[reward.name] = float(score.value), score.details
        return {CandCol.RAW: json.dumps(raw, sort_keys=True), CandCol.DETAILS: json.dumps(details, sort_keys=True)}

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for item in batch.to_pylist():
            row = {CandCol.CANDIDATE_ID: item[CandCol.CANDIDATE_ID], "reward_versions": self.versions}
            try:
                row.update(self._score_one(item))
            except Exception as e:  # the candidate boundary: recorded, the run goes on
                traceback.print_exc()
                row.update(_error(e))
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=_SCORE_SCHEMA)


# ---------------------------------------------------------------- the run


def _collect(ds: Any) -> list[dict]:
    return [r for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) for r in b.to_pylist()]


def _uses_gpu(rewards: RewardsConfig) -> bool:
    """Whether a configured reward runs a model on ``rewards.device`` (the scoring actors then get GPUs)."""
    on_device = bool(set(WEIGHTS) & set(rewards.backends)) or (
        "optical_flow_motion" in rewards.backends and rewards.flow_backend == "unimatch")
    return on_device and rewards.device.startswith("cuda")


def generate_and_score(items: list[dict], checkpoint: str, output: Path, config: PreferenceConfig,
                       encoder_paths: dict) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """(generation rows, scoring rows) of ``items`` through the two actor pools."""
    import ray

    device = "cuda" if config.num_gpus > 0 else "cpu"
    generated = _collect(ray.data.from_items(items).map_batches(
        GenerateCandidates, fn_constructor_args=(checkpoint, str(output), config, encoder_paths, device),
        batch_size=config.batch_size, batch_format="pyarrow", num_gpus=config.num_gpus,
        compute=ray.data.ActorPoolStrategy(size=config.num_workers)))  # fmt: skip
    prompts = {i[CandCol.CANDIDATE_ID]: i[CandCol.PROMPT] for i in items}
    ok = [{**g, CandCol.PROMPT: prompts[g[CandCol.CANDIDATE_ID]]} for g in generated if not g[CandCol.ERROR_TYPE]]
    scored = []
    if ok:
        scored = _collect(ray.data.from_items(ok).map_batches(
            ScoreCandidates, fn_constructor_args=(str(output), config.rewards), batch_size=config.batch_size,
            batch_format="pyarrow", num_gpus=config.num_gpus if _uses_gpu(config.rewards) else 0,
            compute=ray.data.ActorPoolStrategy(size=config.score_workers)))  # fmt: skip
    return generated, scored


def _check_weight_paths(rewards: RewardsConfig) -> None:
    """Fail on the driver, with the key's name, before any actor starts: a missing weights path."""
    keys = ("audiobox_weights", "imagebind_weights", "imagebind_bpe", "clip_model_dir", "laion_mlp_weights",
            "unimatch_repo", "unimatch_weights")  # fmt: skip
    for key in keys:
        value = getattr(rewards, key)
        if value and not Path(value).exists():
            raise FileNotFoundError(f"rewards.{key}={value!r} does not exist (weights are never downloaded)")


def run_preference(checkpoint: str | os.PathLike, output: str | os.PathLike, config: PreferenceConfig, *,
                   data: str | os.PathLike | None = None, prompts_file: str | os.PathLike | None = None,
                   encoder_paths: dict | None = None, ray_address: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Generate, score, rank and pair; returns the manifest. ``ValueError`` / ``FileNotFoundError``
    for user mistakes (no checkpoint, no prompts, a non-empty output folder)."""
    import ray

    from model import checkpoint as ckpt
    from pipeline.runner import library_versions

    if (data is None) == (prompts_file is None):
        raise ValueError("give exactly one of --data OUT and --prompts FILE")
    checkpoint = str(ckpt.resolve_checkpoint(checkpoint))
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} is not empty: javis preference writes a new folder (reruns are refused, "
                         "not resumed); choose another --output or remove it")  # fmt: skip
    _check_weight_paths(config.rewards)
    prompts = read_prompts(data, prompts_file, config.caption_column)
    items = [{CandCol.CANDIDATE_ID: f"{p['prompt_id']}-{k}", CandCol.PROMPT_ID: p["prompt_id"],
              CandCol.PROMPT: p["prompt"], CandCol.INDEX: k, CandCol.SEED: candidate_seed(config.seed, p["prompt_id"], k)}
             for p in prompts for k in range(config.num_candidates)]  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address or "local", include_dashboard=False)
    try:
        generated, scored = generate_and_score(items, checkpoint, output, config, dict(encoder_paths or {}))
    finally:
        if started:
            ray.shutdown()
    from pipeline.preference_write import write_outputs

    return write_outputs(output, checkpoint, config, prompts, items, generated, scored, library_versions())

