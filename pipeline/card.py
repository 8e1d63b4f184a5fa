"""The dataset card: ``OUT/README.md``, so that ``datasets.load_dataset(OUT)`` gives a trainer the
accepted clips and nothing else.

Without a card, Hugging Face ``datasets`` loads every Parquet file under OUT as one split:
accepted clips, rejections, the ledger and the staging parts mixed together. The card's YAML
front matter declares ``configs`` (Hugging Face's format): ``default`` is ``shards/`` (accepted
clips); ``rejections``, ``ledger``, ``sources`` (and ``negatives`` once ``javis augment`` has run)
are named configs. Staging (``_work/``) and a local run's half-built ``.<dir>.*.tmp`` folders
match none of the globs.

On object storage each run writes its files under a new *generation* (pipeline/outputs.py) and
deletes the older ones only after its manifest commits. The card's globs name the generation,
so a reader never mixes two. The card is written after the files it names and just before the
manifest: a run killed between the two leaves a card naming the new (complete) generation
while the manifest still names the old one, until the next run or refilter rewrites both.

The card is rewritten by every ``javis run``, ``javis refilter`` and ``javis augment``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import yaml

from schemas import CLIP_SCHEMA, Col, Kind, State, component_columns, metric_columns
from stages.storage import Storage

CARD = "README.md"
NEGATIVES_DIR = "negatives"

# the columns a trainer reads first, documented one per line (the rest are listed by stage)
_CORE_DOCS = {
    Col.ID: "deterministic clip id: the same input and config always give the same id",
    Col.SOURCE_ID: "id of the source video the clip was cut from (a row of `sources`)",
    Col.INPUT: "the --input entry the source came from (src_url, src_title, ... describe the source)",
    Col.CLIP_START_S: "where the clip starts in the source, seconds (clip_end_s, clip_duration_s)",
    Col.MEDIA_PATH: "the clip's MP4 (H.264 + AAC), **relative to the output folder** (this folder)",
    Col.MEDIA_BYTES: "the MP4 itself when the run set cut.embed_media=true, else null",
    Col.THUMB_PATH: "a JPEG strip of 3 frames of the clip, relative to the output folder",
    Col.CONFIG_HASH: "hash of the deciding stage's config section (manifest.json: config_hashes)",
    Col.UPDATED_AT: "when the row reached its state (UTC)",
    Col.RUN_ID: "the `javis run` invocation that decided the row",
}
_SHARED_COLUMNS = (Col.KIND, Col.STATE, Col.STAGE, Col.REASON, Col.METRIC, Col.VALUE, Col.THRESHOLD, Col.DETAIL,
                   Col.BACKEND, Col.ERROR_TYPE, Col.ERROR_MESSAGE, Col.ATTEMPT)  # fmt: skip


def _globs(files: Mapping[str, Any]) -> dict[str, str]:
    """``{config name: glob}`` for the output directories that have files."""
    generation = files.get("generation")
    tag = f"-{generation}" if generation else ""
    globs = {}
    if files.get("shards"):
        globs["default"] = f"shards/shard{tag}-*.parquet"
    if files.get("rejections"):
        globs["rejections"] = f"rejections/*/rejections{tag}.parquet"
    if files.get("ledger"):
        globs["ledger"] = f"ledger/ledger{tag}.parquet"
    if files.get("sources"):
        globs["sources"] = f"sources/sources{tag}.parquet"
    return globs


def _negatives_files(storage: Storage, negatives_dir: str) -> list[str]:
    rel = f"{negatives_dir}/manifest.json"
    if not storage.exists(rel):
        return []
    return [f"{negatives_dir}/{f['path']}" for f in storage.read_json(rel).get("files", [])]


def front_matter(files: Mapping[str, Any], negatives: list[str]) -> dict[str, Any]:
    configs = []
    for name, glob in _globs(files).items():
        config: dict[str, Any] = {"config_name": name, "data_files": [{"split": "train", "path": glob}]}
        if name == "default":
            config["default"] = True
        configs.append(config)
    if negatives:
        configs.append({"config_name": "negatives", "data_files": [{"split": "train", "path": negatives}]})
    return {"configs": configs, "tags": ["video", "audio", "javis"]}


def _column_guide(schema: pa.Schema) -> Iterator[str]:
    """The core columns one per line, then each stage's columns on one line (scores marked)."""
    metrics, components = set(metric_columns(schema)), component_columns(schema)
    grouped: dict[str, list[str]] = {}
    for field in schema:
        if field.name in _CORE_DOCS:
            yield f"- `{field.name}` ({field.type}): {_CORE_DOCS[field.name]}"
        elif field.name not in _SHARED_COLUMNS:
            mark = " (score)" if field.name in metrics else ""
            mark = f" (part of {components[field.name]})" if field.name in components else mark
            grouped.setdefault(field.name.split("_", 1)[0], []).append(f"`{field.name}`{mark}")
    for prefix, names in grouped.items():
        yield f"- {prefix}: " + ", ".join(names)
    shared = ", ".join(f"`{c}`" for c in _SHARED_COLUMNS)
    yield f"- the decision, as in every table (`ledger`, `rejections`): {shared}"


def _counts_table(counts: Mapping[str, Mapping[str, int]]) -> Iterator[str]:
    yield "| | accepted | rejected | failed |"
    yield "|---|---:|---:|---:|"
    for kind in (Kind.CLIP, Kind.SOURCE):
        by_state = counts.get(kind, {})
        cells = " | ".join(str(by_state.get(s, 0)) for s in (State.ACCEPTED, State.REJECTED, State.FAILED))
        yield f"| {kind}s | {cells} |"


def card_text(manifest: Mapping[str, Any], negatives: list[str]) -> str:
    """The whole README.md for a run's manifest (``negatives``: the files of ``javis augment``)."""
    meta = yaml.safe_dump(front_matter(manifest.get("files", {}), negatives), sort_keys=False)
    hashes = ", ".join(f"{stage} `{h}`" for stage, h in manifest.get("config_hashes", {}).items())
    refilters = manifest.get("refilters", [])
    lines = [
        f"---\n{meta}---",
        "# javis curated clips",
        "",
        "Sounding video clips curated by javis (`manifest.json` holds the",
        "full config, library versions and the funnel; `javis audit .` explains every decision).",
        "",
        "```python",
        "from datasets import load_dataset",
        "clips = load_dataset(OUT, split='train')                # accepted clips only (shards/)",
        "rejected = load_dataset(OUT, 'rejections', split='train')  # also: 'ledger', 'sources'"
        + (", 'negatives'" if negatives else ""),
        "```",
        "",
        "`media_path` and `thumb_path` are **relative to this folder** (the output folder): open",
        "`os.path.join(OUT, row['media_path'])`.",
        "",
        f"- schema version: {manifest.get('schema_version', '?')} (also in each Parquet file's metadata)",
        f"- run id: `{manifest.get('run_id')}` (each row's `run_id` names the `javis run` that decided it;"
        f" runs in this output: {', '.join(f'`{r}`' for r in manifest.get('run_ids', []))})",
        f"- config hashes: {hashes}",
    ]
    if refilters:
        lines.append(f"- re-thresholded {len(refilters)} time(s) by `javis refilter`, last at {refilters[-1]['at']}")
    if "default" not in _globs(manifest.get("files", {})):
        lines.append("- **no clip was accepted**: there is no default config; load a named one")
    lines += ["", *_counts_table(manifest.get("counts", {})), "", "## Columns of the accepted clips", ""]
    lines += list(_column_guide(CLIP_SCHEMA))
    lines += [
        "",
        "Scores are raw values; the threshold each was judged against is in the config (and, for a",
        "rejection, in `value` / `threshold` of its row).",
        "",
    ]
    return "\n".join(lines)


def write_card(out: Storage, manifest: Mapping[str, Any], negatives_dir: str = NEGATIVES_DIR) -> None:
    """Write ``OUT/README.md`` for ``manifest`` (call it before writing the manifest)."""
    out.write_bytes(CARD, card_text(manifest, _negatives_files(out, negatives_dir)).encode())
