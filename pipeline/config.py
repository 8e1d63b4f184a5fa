"""Typed run configuration: one frozen dataclass per stage, presets, overrides, hashing.

Every value is type-checked against its field's annotation and validated when the config is
built, so a bad value fails before any work starts, naming its key, the expected type and where
it came from (a ``--set``, the config file or the preset). This module is over 400 lines: the
presets, the building and its type checks read best together.

The resolved config is written as JSON next to every output (``config.json``) and each stage's
section is hashed into the ``config_hash`` of the decisions it makes. ``javis config`` lists
every key (pipeline/config_docs.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stages.aesthetic import AestheticConfig
from stages.av_sync import AvSyncConfig
from stages.balance import BalanceConfig
from stages.caption_audio import CaptionAudioConfig
from stages.caption_merge import CaptionMergeConfig
from stages.caption_video import CaptionVideoConfig
from stages.content import ContentConfig
from stages.cut import CutConfig
from stages.ingest import IngestConfig
from stages.keywords import KeywordsConfig
from stages.motion import MotionConfig
from stages.ocr import OcrConfig
from stages.probe import ProbeConfig
from stages.scene_cut import ClipLengthConfig, SceneCutConfig
from stages.sound import SoundConfig
from stages.speech import SpeechConfig
from stages.taxonomy import TaxonomyConfig


@dataclasses.dataclass(frozen=True)
class StageResources:
    """How ``pipeline/`` maps one stage onto Ray Data."""

    num_cpus: float = 1.0  # per task / actor
    num_gpus: float = 0.0  # per actor (production backends on CUDA get 1 unless set)
    batch_size: int = 1  # rows per map_batches call; decode-heavy stages want small batches
    max_concurrency: int | None = None  # cap on parallel tasks (None: as many as CPUs allow)

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("num_cpus and num_gpus must be >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1 or null")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    shard_target_mb: float = 256.0  # a shard is closed once its rows reach this size
    shard_max_rows: int = 100_000  # ... or once it has this many rows
    compression: str = "zstd"  # Parquet codec: zstd, snappy, gzip or none
    compression_level: int = 3  # zstd level (ignored by the other codecs)
    keep_rejected_media: bool = False  # keep clip files of rejected clips (for inspection)

    def __post_init__(self) -> None:
        if self.shard_target_mb <= 0 or self.shard_max_rows < 1:
            raise ValueError("shard_target_mb must be > 0 and shard_max_rows >= 1")
        if self.compression not in ("zstd", "snappy", "gzip", "none"):
            raise ValueError(f"unsupported compression {self.compression!r}")


@dataclasses.dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: start an embedded local Ray; "auto": join a cluster
    num_cpus: int | None = None  # local Ray only (None: all cores)
    object_store_mb: int | None = 1024  # local Ray only; Ray's default reserves 30 % of RAM
    progress_bars: bool = True  # Ray Data's per-operator bars
    # node-local folder for work files (downloads in progress, encodes before upload, sources
    # fetched from object storage); None: $JAVIS_SCRATCH_DIR, else the system temp dir
    scratch_dir: str | None = None
    # joining a cluster: send javis' own packages with the job, so nodes started elsewhere run
    # the driver's code (its dependencies must be installed on every node)
    ship_code: bool = True

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError("ray.num_cpus must be >= 1")
        if self.object_store_mb is not None and self.object_store_mb < 64:
            raise ValueError("ray.object_store_mb must be >= 64")


def _default_resources() -> dict[str, StageResources]:
    return {
        "ingest": StageResources(num_cpus=0.5, batch_size=1),  # network-bound
        "probe": StageResources(num_cpus=0.25, batch_size=1),
        # the one decode of a source (scene detection and analysis packs); clips stream out
        "scene_cut": StageResources(num_cpus=1.0, batch_size=1),
        # batch size 1 for the clip stages: a clip leaves the pipeline (and is staged for resume)
        # as soon as it is done, instead of waiting for others bundled with it
        "clip_length": StageResources(num_cpus=0.25, batch_size=1),
        "sound": StageResources(num_cpus=0.25, batch_size=1),
        # filters load a model once per actor; a quarter CPU each keeps four pools plus the
        # spine's tasks schedulable on a 2-core laptop (Ray Data hangs when actors hold every CPU)
        "aesthetic": StageResources(num_cpus=0.25, batch_size=1, max_concurrency=1),
        "motion": StageResources(num_cpus=0.25, batch_size=1, max_concurrency=1),
        "speech": StageResources(num_cpus=0.25, batch_size=1, max_concurrency=1),
        "ocr": StageResources(num_cpus=0.25, batch_size=1, max_concurrency=1),
        "av_sync": StageResources(num_cpus=0.25, batch_size=1, max_concurrency=1),
        # annotation: one model per actor; several clips per call so the engine batches them
        # (a vLLM backend gets llm.tensor_parallel_size GPUs unless num_gpus says otherwise)
        "caption_video": StageResources(num_cpus=0.25, batch_size=8, max_concurrency=1),
        "caption_audio": StageResources(num_cpus=0.25, batch_size=8, max_concurrency=1),
        "caption_merge": StageResources(num_cpus=0.25, batch_size=8, max_concurrency=1),
        "taxonomy": StageResources(num_cpus=0.25, batch_size=8, max_concurrency=1),
        "content": StageResources(num_cpus=0.25, batch_size=8),
        # the encode, on the clips that passed everything else
        "cut": StageResources(num_cpus=1.0, batch_size=1),
    }


@dataclasses.dataclass(frozen=True)
class Config:
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    scene_cut: SceneCutConfig = dataclasses.field(default_factory=SceneCutConfig)
    clip_length: ClipLengthConfig = dataclasses.field(default_factory=ClipLengthConfig)
    cut: CutConfig = dataclasses.field(default_factory=CutConfig)
    sound: SoundConfig = dataclasses.field(default_factory=SoundConfig)
    aesthetic: AestheticConfig = dataclasses.field(default_factory=AestheticConfig)
    motion: MotionConfig = dataclasses.field(default_factory=MotionConfig)
    speech: SpeechConfig = dataclasses.field(default_factory=SpeechConfig)
    ocr: OcrConfig = dataclasses.field(default_factory=OcrConfig)
    av_sync: AvSyncConfig = dataclasses.field(default_factory=AvSyncConfig)  # off until calibrated
    # annotation (off unless models are configured: captions are never faked)
    caption_video: CaptionVideoConfig = dataclasses.field(default_factory=CaptionVideoConfig)
    caption_audio: CaptionAudioConfig = dataclasses.field(default_factory=CaptionAudioConfig)
    caption_merge: CaptionMergeConfig = dataclasses.field(default_factory=CaptionMergeConfig)
    taxonomy: TaxonomyConfig = dataclasses.field(default_factory=TaxonomyConfig)
    content: ContentConfig = dataclasses.field(default_factory=ContentConfig)
    balance: BalanceConfig = dataclasses.field(default_factory=BalanceConfig)
    keywords: KeywordsConfig = dataclasses.field(default_factory=KeywordsConfig)  # javis crawl
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    resources: dict[str, StageResources] = dataclasses.field(default_factory=_default_resources)

    def __post_init__(self) -> None:
        unknown = set(self.resources) - set(_default_resources())
        if unknown:
            raise ValueError(f"resources for unknown stages: {sorted(unknown)}")
        missing = set(_default_resources()) - set(self.resources)
        if missing:
            raise ValueError(f"resources missing for stages: {sorted(missing)}")
        clips = Path(self.cut.clips_dir)
        if clips == Path(self.ingest.download_dir) or clips in Path(self.ingest.download_dir).parents:
            raise ValueError(
                "ingest.download_dir must not be inside cut.clips_dir (unreferenced clip files are pruned)"
            )
        if self.clip_length.min_clip_s > self.scene_cut.max_clip_s:
            raise ValueError("clip_length.min_clip_s must not exceed scene_cut.max_clip_s")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_hash(self, stage: str) -> str:
        """Hash of one stage's section: recorded with every decision that stage makes."""
        section = getattr(self, stage, None)
        text = json.dumps(dataclasses.asdict(section) if section is not None else stage, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---- presets -------------------------------------------------------------------------------


def preset_default() -> Config:
    """Paper settings: 2-60 s clips, AdaptiveDetector, near-silence below -60 dBFS, and the
    quality filters (aesthetic, motion, speech, OCR) on their CPU backends."""
    return Config()


def _without_filters(config: Config) -> Config:
    return dataclasses.replace(
        config,
        aesthetic=dataclasses.replace(config.aesthetic, enabled=False),
        motion=dataclasses.replace(config.motion, enabled=False),
        speech=dataclasses.replace(config.speech, enabled=False),
        ocr=dataclasses.replace(config.ocr, enabled=False),
        av_sync=dataclasses.replace(config.av_sync, enabled=False),
    )


def preset_spine() -> Config:
    """Only the spine (ingest, probe, scene cut, clip length, sound check, cut): no quality filters."""
    return _without_filters(Config())


def preset_demo() -> Config:
    """The bundled demo: small shards so the output shows sharding, fast x264 preset."""
    return dataclasses.replace(
        Config(),
        cut=CutConfig(x264_preset="ultrafast"),
        output=OutputConfig(shard_target_mb=1.0, shard_max_rows=4),
    )


def preset_demo_spine() -> Config:
    """The demo settings without the quality filters."""
    return _without_filters(preset_demo())


def preset_paper() -> Config:
    """The default filters plus the audio-visual synchrony filter (``av_sync``, AV-Align on CPU;
    ``--set av_sync.backend=javisscore av_sync.imagebind_weights=...`` for the paper's JavisScore).
    Its threshold is a placeholder until calibrated with ``javis sync-eval``."""
    config = Config()
    return dataclasses.replace(config, av_sync=dataclasses.replace(config.av_sync, enabled=True))


ANNOTATION_STAGES = ("caption_video", "caption_audio", "caption_merge", "taxonomy")


def preset_annotate() -> dict[str, Any]:
    """The paper's full curation: the default filters, then the four annotation steps (vLLM)
    and the content filter. The model paths have no default: set them, e.g.
    ``--set caption_video.llm.model_path=/models/Qwen2-VL-7B-Instruct`` (and the same for
    caption_audio with Qwen2-Audio-7B-Instruct, caption_merge and taxonomy with
    Qwen2.5-7B-Instruct), or point each ``llm`` at a served endpoint with ``backend=openai``.
    Returned as plain values: it is validated once the paths are in."""
    values = Config().to_dict()
    for name in (*ANNOTATION_STAGES, "content"):
        values[name]["enabled"] = True
    return values


PRESETS: dict[str, Callable[[], Config | dict[str, Any]]] = {
    "default": preset_default,
    "spine": preset_spine,
    "demo": preset_demo,
    "demo-spine": preset_demo_spine,
    "annotate": preset_annotate,
    "paper": preset_paper,
}


def preset_values(preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values = PRESETS[preset]()
    return values.to_dict() if isinstance(values, Config) else values


# ---- building from dicts, files and overrides ------------------------------------------------


class ConfigTypeError(ValueError):
    """A config value of the wrong type; ``key`` is its dotted path (``config.speech.max_speech_ratio``)."""

    def __init__(self, key: str, expected: str, value: Any) -> None:
        self.key, self.expected, self.value = key, expected, value
        super().__init__(f"{key}: expected {expected}, got {value!r}")


_SCALAR_NAMES = {
    bool: "true or false (bool)",
    int: "an integer (int)",
    float: "a number (float)",
    str: "a string (str)",
}
_PLURAL_NAMES = {
    bool: "true/false values (bool)",
    int: "integers (int)",
    float: "numbers (float)",
    str: "strings (str)",
}


def _describe(hint: Any) -> str:
    """``float | None`` -> "a number (float) or null", for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        return f"a list of {_PLURAL_NAMES.get(args[0], 'values')}" if args else "a list"
    if origin is dict:
        return f"a mapping of names to {_PLURAL_NAMES.get(args[1], 'values')}" if args else "a mapping"
    return _SCALAR_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _typed(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked against the field's type hint. Values come from YAML, which guesses
    types from text: a YAML number or date given for a text field is taken as its text, and
    an integer for a float field is kept (a bool is never a number)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or dataclasses.is_dataclass(hint):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _typed(arg, value, key)
            except ConfigTypeError:
                pass
        raise ConfigTypeError(key, _describe(hint), value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }
    if hint in ok:
        if hint is str and isinstance(value, (int, float, dt.date)) and not isinstance(value, bool):
            return str(value)
        if not ok[hint]:
            raise ConfigTypeError(key, _describe(hint), value)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigTypeError(key, _describe(hint), value)
        item = args[0] if args else Any
        items = [_typed(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigTypeError(key, _describe(hint), value)
        return {k: _typed(args[1] if args else Any, v, f"{key}.{k}") for k, v in value.items()}
    return value


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(fields)}")
    hints = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name) if name != "resources" else None
        if name == "resources":
            if not isinstance(value, Mapping):
                raise ConfigTypeError(f"{where}.resources", "a mapping of stage names to resources", value)
            kwargs[name] = {k: _build(StageResources, v, f"{where}.resources.{k}") for k, v in value.items()}
        elif dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = _typed(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """``"scene_cut.detector=content"`` -> ``{"scene_cut": {"detector": "content"}}``.
    The value is parsed as YAML, so numbers, booleans and ``null`` get their types."""
    if "=" not in text:
        raise ValueError(f"override must look like section.key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    keys = dotted.strip().split(".")
    if len(keys) < 2 or not all(keys):
        raise ValueError(f"override key must be section.key, got {dotted!r}")
    node: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        node = {key: node}
    return node


def load_config(
    preset: str = "default", path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()
) -> Config:
    """Preset, then a YAML/JSON file, then ``section.key=value`` overrides, validated once."""
    values = preset_values(preset)
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        values = _deep_merge(values, loaded)
    for text in overrides:
        values = _deep_merge(values, parse_override(text))
    try:
        return _build(Config, values, "config")
    except ConfigTypeError as e:
        raise _located(e, overrides, str(path) if path is not None else f"preset {preset}") from e


def _located(error: ConfigTypeError, overrides: Sequence[str], otherwise: str) -> ValueError:
    """Name where a wrongly typed value came from: the last ``--set`` of its key, else ``otherwise``
    (the config file or the preset)."""
    key = error.key.removeprefix("config.")
    for text in reversed(overrides):
        dotted = text.split("=", 1)[0].strip()
        if key == dotted or key.startswith((f"{dotted}.", f"{dotted}[")):
            return ValueError(f"--set {text.strip()}: expected {error.expected}, got {error.value!r}")
    return ValueError(f"{otherwise}: {error}")


def load_config_over(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """``config`` with ``section.key=value`` overrides applied, validated again."""
    values = config.to_dict()
    for text in overrides:
        values = _deep_merge(values, parse_override(text))
    try:
        return _build(Config, values, "config")
    except ConfigTypeError as e:
        raise _located(e, overrides, "the run's config") from e


def apply_overrides(config: Any, section: str, overrides: Sequence[str]) -> Any:
    """A section's dataclass ``config`` with ``--set KEY=VALUE`` overrides (keys relative to
    ``section``) applied and validated again: ``javis augment`` and ``javis preference``."""
    values = dataclasses.asdict(config)
    for text in overrides:
        values = _deep_merge(values, parse_override(f"{section}.{text}")[section])
    return build_dataclass(type(config), values, section)


def build_dataclass(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """A validated config dataclass (nested ones included) from a mapping; unknown keys raise."""
    return _build(cls, values, where)


# stages of earlier javis versions whose resources an old output folder's config.json may hold:
# ``decode`` merged into scene_cut's analysis pass (schema 1.2.0)
RETIRED_STAGES = ("decode",)


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """The config saved with a run (``config.json``), including one written by an earlier javis."""
    values = dict(values)
    if isinstance(values.get("resources"), Mapping):
        values["resources"] = {k: v for k, v in values["resources"].items() if k not in RETIRED_STAGES}
    return _build(Config, values, "config")
