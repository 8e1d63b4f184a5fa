"""The curation DAG: which stages run, in which order, and how each maps onto Ray Data.

Stages are plain classes (``stages/``). Here each becomes a ``map_batches`` call over
``pyarrow`` batches of work rows: a task per batch for stateless CPU work, an actor pool for
stages that load a model once (``StageSpec.stateful``) or ask for GPUs. Resources and batch
sizes come from ``Config.resources``.

Order: ingest -> probe -> scene_cut, the one decode of each source: it finds the scenes and
streams out every candidate clip with its analysis pack (the frames and audio every later
reader declared). Then, on the packs: clip_length, the sound check, the enabled quality filters,
cheapest first (measured in ``bench/``) so the costly ones only see clips that can still pass,
and annotation, on the GPU in production: video and audio captions (the audio captioner never
sees the video caption), the merge with its conflict check, the taxonomy, and the content
filter. Only then ``cut``: the encode, the most expensive step per clip, runs on the clips that
passed everything, never on one a filter rejects. A row's pack is dropped as soon as the row
ends, and every pack after its last reader. Balancing needs every accepted clip at once, so it
is not a map stage: the runner applies it at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Config
from schemas import WORK_SCHEMA, Col, Kind, State, conform
from stages import aesthetic, av_sync, content, motion, ocr, speech
from stages.analysis import PackPlan
from stages.balance import Balance
from stages.base import Rejection, Stage, apply_stage, mark_rejected, stream_stage
from stages.caption_audio import CaptionAudio
from stages.caption_merge import CaptionMerge
from stages.caption_video import CaptionVideo
from stages.cut import Cut
from stages.ingest import Ingest
from stages.probe import Probe
from stages.scene_cut import ClipLength, SceneCut
from stages.sound import Sound
from stages.taxonomy import Taxonomy

log = logging.getLogger(__name__)

MAX_INPUT_BLOCKS = 2000
# Blocks are cut at this size, so a clip carrying its analysis pack (megabytes) travels alone:
# each moves on to the next stage the moment it is ready, instead of waiting in a ~128 MiB block
# for a score of others (Ray Data's default). Small rows still share blocks.
TARGET_BLOCK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str  # also the name of the stage's config section (and of its resources entry)
    cls: type  # the stage class: its ClassVars (unit, requires, produces) are read without building it
    build: Callable[[Config, str], Stage]  # (config, output_dir) -> stage instance
    stateful: bool = False  # loads a model: run in an actor pool, built once per actor
    enabled: Callable[[Config], bool] = lambda c: True
    # re-thresholding from stored scores (javis refilter): the stage's pure decision function
    # and the column that says the stage scored a row
    decide: Callable[[Any, dict[str, Any]], Rejection | None] | None = None
    ran_column: str | None = None

    @property
    def unit(self) -> str:
        return self.cls.unit

    @property
    def streaming(self) -> bool:
        """Emits its children while it works (see ``stages.base.stream_stage``)."""
        return hasattr(self.cls, "stream")


# quality filters, cheapest first: (config section, stage class, decide, column set on every scored row)
FILTERS: tuple[tuple[str, Any, Callable, str], ...] = (
    ("aesthetic", aesthetic.Aesthetic, aesthetic.decide, Col.AESTHETIC_BACKEND),
    ("motion", motion.Motion, motion.decide, Col.MOTION_BACKEND),
    ("speech", speech.Speech, speech.decide, Col.SPEECH_BACKEND),
    ("ocr", ocr.Ocr, ocr.decide, Col.OCR_BACKEND),
    ("av_sync", av_sync.AvSync, av_sync.decide, Col.AV_SYNC_BACKEND),
)


# annotation steps driven by an LLM (config section, stage class): each section has an ``llm``
LLM_STAGES: tuple[tuple[str, Any], ...] = (
    ("caption_video", CaptionVideo),
    ("caption_audio", CaptionAudio),
    ("caption_merge", CaptionMerge),
    ("taxonomy", Taxonomy),
)

# stages that read the analysis pack's frames or 16 kHz audio (they declare frame_need / needs_audio)
PACK_READERS: tuple[tuple[str, Any], ...] = (
    *((name, cls) for name, cls, _, _ in FILTERS),
    ("caption_video", CaptionVideo),
    ("caption_audio", CaptionAudio),
)

# production backends that run on a GPU: their stage gets one GPU unless resources say otherwise
GPU_BACKENDS = {
    "aesthetic": "laion",
    "motion": "unimatch",
    "speech": "funasr",
    "ocr": "rapidocr_det_cuda",
    "av_sync": "javisscore",
}


def _llm_gpus(llm: Any) -> float:
    if llm.backend == "vllm":
        return float(llm.tensor_parallel_size)
    if llm.backend == "transformers" and str(llm.device).startswith("cuda"):
        return 1.0
    return 0.0  # openai: the model runs elsewhere


def stage_gpus(spec_name: str, config: Config) -> float:
    """GPUs for one stage's actors: the configured number, else 1 for a production backend on
    CUDA (``tensor_parallel_size`` for a vLLM engine)."""
    configured = config.resources[spec_name].num_gpus
    if configured:
        return configured
    if spec_name in dict(LLM_STAGES):
        return _llm_gpus(getattr(config, spec_name).llm)
    if spec_name not in GPU_BACKENDS:
        return configured
    section = getattr(config, spec_name)
    if section.backend != GPU_BACKENDS[spec_name]:
        return configured
    device = getattr(section, "device", "cuda")
    return 1.0 if str(device).startswith("cuda") else 0.0


def check_gpus(config: Config, available_gpus: float, autoscaling: bool) -> None:
    """Refuse to start a run whose stages need GPUs the (non-autoscaling) cluster lacks:
    Ray Data would otherwise wait for them forever."""
    wanted = {s.name: g for s in active_stages(config) if (g := stage_gpus(s.name, config)) > available_gpus}
    if wanted and not autoscaling:
        raise ValueError(
            f"stages {sorted(wanted)} need a GPU but this Ray has {available_gpus:g}: choose CPU backends "
            f"(e.g. --set {next(iter(wanted))}.backend=...) or join a GPU cluster with --address"
        )


def pack_plan(config: Config) -> PackPlan:
    """What each clip's analysis pack holds: every enabled reader's frames and audio, the sound
    check's loudness; pieces too short for clip_length get none."""
    readers = [(name, cls) for name, cls in PACK_READERS if getattr(config, name).enabled]
    needs = tuple(n for name, cls in readers if (n := cls.frame_need(getattr(config, name))) is not None)
    audio = any(cls.needs_audio(getattr(config, name)) for name, cls in readers)
    return PackPlan(needs=needs, audio=audio, loudness=True, min_clip_s=config.clip_length.min_clip_s)


def _llm_spec(name: str, cls: Any) -> StageSpec:
    return StageSpec(
        name, cls, lambda c, out: cls(getattr(c, name)), stateful=True, enabled=lambda c: getattr(c, name).enabled
    )


def _filter_spec(name: str, cls: Any, decide: Callable, ran_column: str) -> StageSpec:
    return StageSpec(
        name,
        cls,
        lambda c, out: cls(getattr(c, name)),
        stateful=True,
        enabled=lambda c: getattr(c, name).enabled,
        decide=decide,
        ran_column=ran_column,
    )


STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", Ingest, lambda c, out: Ingest(c.ingest, out)),
    StageSpec("probe", Probe, lambda c, out: Probe(c.probe)),
    StageSpec("scene_cut", SceneCut, lambda c, out: SceneCut(c.scene_cut, pack_plan(c), out)),
    StageSpec("clip_length", ClipLength, lambda c, out: ClipLength(c.clip_length)),
    StageSpec("sound", Sound, lambda c, out: Sound(c.sound)),
    *(_filter_spec(*f) for f in FILTERS),
    *(_llm_spec(*s) for s in LLM_STAGES),
    StageSpec(
        "content",
        content.Content,
        lambda c, out: content.Content(c.content),
        enabled=lambda c: c.content.enabled,
        decide=content.decide,
        ran_column=Col.CONTENT_NUM_OTHER_SOUND_TYPES,
    ),
    StageSpec("cut", Cut, lambda c, out: Cut(c.cut, out)),  # the encode: last, on survivors only
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

#: Columns a source row has before any stage runs (set by input planning).
PLANNED_COLUMNS = frozenset(
    {Col.ID, Col.KIND, Col.SOURCE_ID, Col.INPUT, Col.SRC_URL, Col.SRC_PATH, Col.SRC_QUERY, Col.SRC_TITLE}
)


def active_stages(config: Config) -> list[StageSpec]:
    """The stages this config runs, in order."""
    return [s for s in STAGES if s.enabled(config)]


def check_columns(config: Config) -> None:
    """Fail at build time if a stage reads a column no upstream stage produces. Reads the
    classes only: building a stage here would load its model on the driver (which may have no
    GPU) instead of in the workers."""
    available = set(PLANNED_COLUMNS)
    for spec in active_stages(config):
        if spec.cls.name != spec.name:
            raise AssertionError(f"stage spec {spec.name} does not match its class {spec.cls.__name__}")
        missing = set(spec.cls.requires) - available
        if missing:
            raise ValueError(f"stage {spec.name} reads {sorted(missing)}, which no upstream stage produces")
        available |= set(spec.cls.produces)
    if config.balance.enabled and set(Balance.requires) - available:
        raise ValueError("balance needs the taxonomy columns: enable the annotation stages (taxonomy) too")


def annotation_summary(config: Config) -> dict[str, Any]:
    """What the manifest says about annotation: each step on or off, its model and prompt."""
    from prompts import load_prompt

    steps: dict[str, Any] = {}
    for name, cls in LLM_STAGES:
        section = getattr(config, name)
        entry: dict[str, Any] = {"enabled": section.enabled}
        if section.enabled:
            llm = section.llm
            entry.update(backend=llm.backend, model=llm.model_path or llm.model, endpoint=llm.endpoint)
            entry["prompt"] = load_prompt(cls.prompt_name).id
        steps[name] = entry
    steps["content"] = {"enabled": config.content.enabled}
    steps["balance"] = {"enabled": config.balance.enabled}
    summary: dict[str, Any] = {"steps": steps}
    if not any(s["enabled"] for s in steps.values()):
        summary["note"] = (
            "annotation is disabled in this config (no captioning model configured): clips carry no "
            "captions or taxonomy; see the 'annotate' preset"
        )
    return summary


def funnel_stages(config: Config) -> list[tuple[str, str]]:
    """(name, unit) of every stage a row may end at, in order: the map stages, then balancing."""
    stages = [(s.name, s.unit) for s in active_stages(config)]
    if config.balance.enabled:
        stages.append((Balance.name, Balance.unit))
    return stages


def apply_balance(rows: pa.Table, config: Config) -> pa.Table:
    """Balancing over every accepted clip at once (a global step, so not a map stage): clips
    over their category's quota become ``rejected`` at ``balance``. It is recomputed from the
    accepted clips on every run and refilter, so it is never written to the staging area: a
    later run with more clips balances all of them together."""
    if not config.balance.enabled:
        return rows
    records = rows.to_pylist()
    accepted = [r for r in records if r[Col.KIND] == Kind.CLIP and r[Col.STATE] == State.ACCEPTED]
    dropped = Balance(config.balance).select(accepted)
    config_hash = config.stage_hash(Balance.name)
    for row in records:
        rejection = dropped.get(row[Col.ID])
        if rejection is None or row[Col.KIND] != Kind.CLIP or row[Col.STATE] != State.ACCEPTED:
            continue
        mark_rejected(row, Balance.name, rejection, config_hash)
    return conform(records, WORK_SCHEMA)


def _spec(name: str) -> StageSpec:
    return STAGES[STAGE_NAMES.index(name)]


def last_pack_reader(config: Config) -> str:
    """The last active stage that reads the analysis pack: packs are dropped after it."""
    return [s.name for s in active_stages(config) if Col.DECODED in s.cls.requires][-1]


def shed_packs(batch: pa.Table, keep_pending: bool) -> pa.Table:
    """Null the analysis packs of rows that have ended (all of them unless ``keep_pending``):
    a rejected clip's frames never travel further."""
    index = batch.schema.get_field_index(Col.DECODED)
    packs = batch.column(index)
    if packs.null_count == batch.num_rows:
        return batch
    if keep_pending:
        kept = pc.if_else(pc.equal(batch.column(Col.STATE), State.PENDING), packs, pa.scalar(None, pa.large_binary()))
    else:
        kept = pa.nulls(batch.num_rows, pa.large_binary())
    return batch.set_column(index, batch.schema.field(index), kept)


def run_stage_batch(batch: pa.Table, stage_name: str, config: Config, output_dir: str, last_reader: bool) -> pa.Table:
    """Task body: build the (cheap, stateless) stage and apply it to one batch."""
    out = apply_stage(_spec(stage_name).build(config, output_dir), batch, config.stage_hash(stage_name))
    return shed_packs(out, keep_pending=not last_reader)


def run_streaming_batch(batch: pa.Table, stage_name: str, config: Config, output_dir: str) -> Any:
    """Task body of a streaming stage: tables leave as the stage emits rows (a source's clips as
    their scenes close), so a task never holds a whole source's packs."""
    stage = _spec(stage_name).build(config, output_dir)
    for table in stream_stage(stage, batch, config.stage_hash(stage_name)):
        yield shed_packs(table, keep_pending=True)


class StageActor:
    """Actor body: build the stage (load its model) once, then apply it to many batches."""

    def __init__(self, stage_name: str, config: Config, output_dir: str, last_reader: bool) -> None:
        self.stage = _spec(stage_name).build(config, output_dir)
        self.config_hash = config.stage_hash(stage_name)
        self.last_reader = last_reader

    def __call__(self, batch: pa.Table) -> pa.Table:
        return shed_packs(apply_stage(self.stage, batch, self.config_hash), keep_pending=not self.last_reader)


def fit_cpus(config: Config, available_cpus: float | None) -> dict[str, float]:
    """CPUs per task / actor for each active stage, shrunk to fit a fixed-size cluster.

    Every actor pool holds at least one actor, and each actor holds its CPUs for the whole run.
    If the actors together leave less than one task's CPUs free, the map tasks can never be
    scheduled and Ray Data waits forever (on a 2-core laptop: five model stages at 0.25 CPU plus
    a 1-CPU cut). So, for a cluster that cannot grow, the actors' reservations are scaled down
    until a task fits beside them. The actors then share cores: slower, never stuck."""
    specs = active_stages(config)
    cpus = {s.name: config.resources[s.name].num_cpus for s in specs}
    if not available_cpus:
        return cpus
    actors = [s.name for s in specs if s.stateful or stage_gpus(s.name, config)]
    tasks = [s.name for s in specs if s.name not in actors]
    for name in tasks:
        cpus[name] = min(cpus[name], available_cpus)
    budget = available_cpus - max((cpus[n] for n in tasks), default=0.0)
    held = sum(cpus[n] for n in actors)
    if held > budget + 1e-9:
        scale = 0.95 * max(budget, 0.0) / held
        log.warning(
            "actor stages hold %.2f of %g CPUs and would leave no room for the map tasks: scaling their "
            "reservations by %.2f (set resources.<stage>.num_cpus to choose)", held, available_cpus, scale
        )
        for name in actors:
            cpus[name] = round(cpus[name] * scale, 4)
    return cpus


def build_dataset(rows: pa.Table, config: Config, output_dir: str, available_cpus: float | None = None) -> Any:
    """A lazy Ray Dataset that runs every active stage over ``rows``. ``available_cpus``: the
    size of a cluster that cannot grow (reservations are fitted to it, see :func:`fit_cpus`).
    Run it with the DataContext's ``target_max_block_size`` at :data:`TARGET_BLOCK_BYTES`."""
    import ray.data

    check_columns(config)
    cpus = fit_cpus(config, available_cpus)
    # one block per source up to MAX_INPUT_BLOCKS (blocks are the unit of parallelism), then
    # several sources per block so a million-source plan does not become a million objects
    per_block = math.ceil(rows.num_rows / MAX_INPUT_BLOCKS) if rows.num_rows else 1
    ds = ray.data.from_arrow([rows.slice(i, per_block) for i in range(0, rows.num_rows, per_block)])
    specs = active_stages(config)
    last_reader = last_pack_reader(config)
    for spec in specs:
        res = config.resources[spec.name]
        common: dict[str, Any] = dict(
            batch_format="pyarrow", batch_size=res.batch_size, num_cpus=cpus[spec.name], zero_copy_batch=True
        )
        num_gpus = stage_gpus(spec.name, config)
        if num_gpus:
            common["num_gpus"] = num_gpus
        args = (spec.name, config, output_dir)
        if spec.stateful or num_gpus:
            pool = ray.data.ActorPoolStrategy(min_size=1, max_size=res.max_concurrency or 1)
            args += (spec.name == last_reader,)
            ds = ds.map_batches(StageActor, fn_constructor_args=args, compute=pool, **common)
            continue
        compute = ray.data.TaskPoolStrategy(size=res.max_concurrency) if res.max_concurrency else None
        if spec.streaming:
            ds = ds.map_batches(run_streaming_batch, fn_args=args, compute=compute, **common)
        else:
            ds = ds.map_batches(run_stage_batch, fn_args=(*args, spec.name == last_reader), compute=compute, **common)
    return ds
