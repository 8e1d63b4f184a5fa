"""The curation DAG: which stages run, in which order, and how each maps onto Ray Data.

Stages are plain classes (``stages/``). Here each becomes a ``map_batches`` call over
``pyarrow`` batches of work rows: a task per batch for stateless CPU work, an actor pool for
stages that load a model once (``StageSpec.stateful``) or ask for GPUs. Resources and batch
sizes come from ``Config.resources``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from pipeline.config import Config
from schemas import Col, Kind
from stages.base import Stage, apply_stage
from stages.cut import Cut
from stages.ingest import Ingest
from stages.probe import Probe
from stages.scene_cut import ClipLength, SceneCut
from stages.sound import Sound


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str  # also the name of the stage's config section
    unit: str
    build: Callable[[Config, str], Stage]  # (config, output_dir) -> stage instance
    stateful: bool = False  # loads a model: run in an actor pool, built once per actor
    # re-thresholding from stored scores (javis refilter): the stage's pure decision function
    # and the column that says the stage scored a row
    decide: Callable[[Any, dict[str, Any]], Any] | None = None
    ran_column: str | None = None


STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", Kind.SOURCE, lambda c, out: Ingest(c.ingest, out)),
    StageSpec("probe", Kind.SOURCE, lambda c, out: Probe(c.probe)),
    StageSpec("scene_cut", Kind.SOURCE, lambda c, out: SceneCut(c.scene_cut)),
    StageSpec("clip_length", Kind.CLIP, lambda c, out: ClipLength(c.clip_length)),
    StageSpec("cut", Kind.CLIP, lambda c, out: Cut(c.cut, out)),
    StageSpec("sound", Kind.CLIP, lambda c, out: Sound(c.sound, out)),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

MAX_INPUT_BLOCKS = 2000

#: Columns a source row has before any stage runs (set by input planning).
PLANNED_COLUMNS = frozenset(
    {Col.ID, Col.KIND, Col.SOURCE_ID, Col.INPUT, Col.SRC_URL, Col.SRC_PATH, Col.SRC_QUERY, Col.SRC_TITLE}
)


def active_stages(config: Config) -> list[StageSpec]:
    """The stages this config runs, in order."""
    return list(STAGES)


def check_columns(config: Config, output_dir: str) -> None:
    """Fail at build time if a stage reads a column no upstream stage produces."""
    available = set(PLANNED_COLUMNS)
    for spec in STAGES:
        stage = spec.build(config, output_dir)
        if stage.name != spec.name or stage.unit != spec.unit:
            raise AssertionError(f"stage spec {spec.name} does not match its class {type(stage).__name__}")
        missing = set(stage.requires) - available
        if missing:
            raise ValueError(f"stage {spec.name} reads {sorted(missing)}, which no upstream stage produces")
        available |= set(stage.produces)


def run_stage_batch(batch: pa.Table, stage_name: str, config: Config, output_dir: str) -> pa.Table:
    """Task body: build the (cheap, stateless) stage and apply it to one batch."""
    spec = STAGES[STAGE_NAMES.index(stage_name)]
    return apply_stage(spec.build(config, output_dir), batch, config.stage_hash(stage_name))


class StageActor:
    """Actor body: build the stage (load its model) once, then apply it to many batches."""

    def __init__(self, stage_name: str, config: Config, output_dir: str) -> None:
        spec = STAGES[STAGE_NAMES.index(stage_name)]
        self.stage = spec.build(config, output_dir)
        self.config_hash = config.stage_hash(stage_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return apply_stage(self.stage, batch, self.config_hash)


def build_dataset(rows: pa.Table, config: Config, output_dir: str) -> Any:
    """A lazy Ray Dataset that runs every stage over ``rows`` (one block per source)."""
    import ray.data

    check_columns(config, output_dir)
    # one block per source up to MAX_INPUT_BLOCKS (blocks are the unit of parallelism), then
    # several sources per block so a million-source plan does not become a million objects
    per_block = math.ceil(rows.num_rows / MAX_INPUT_BLOCKS) if rows.num_rows else 1
    ds = ray.data.from_arrow([rows.slice(i, per_block) for i in range(0, rows.num_rows, per_block)])
    for spec in STAGES:
        res = config.resources[spec.name]
        common: dict[str, Any] = dict(
            batch_format="pyarrow", batch_size=res.batch_size, num_cpus=res.num_cpus, zero_copy_batch=True
        )
        if res.num_gpus:
            common["num_gpus"] = res.num_gpus
        if spec.stateful or res.num_gpus:
            pool = ray.data.ActorPoolStrategy(min_size=1, max_size=res.max_concurrency or 1)
            ds = ds.map_batches(StageActor, fn_constructor_args=(spec.name, config, output_dir), compute=pool, **common)
        else:
            compute = ray.data.TaskPoolStrategy(size=res.max_concurrency) if res.max_concurrency else None
            ds = ds.map_batches(run_stage_batch, fn_args=(spec.name, config, output_dir), compute=compute, **common)
    return ds
