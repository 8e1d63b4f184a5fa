"""``javis report OUT``: a static HTML report of a finished run, for auditors.

One HTML file plus an ``assets/`` folder (the plotting library, the page's script and style,
the gallery thumbnails), written to ``OUT/report/`` or ``--dest``. It opens from disk with no
server and no network. It shows the funnel per stage with reasons (the numbers of
``javis audit --json``), a histogram per threshold of the clips that reached its stage (passed
vs rejected there, the threshold line, counts each side), a what-if control per threshold, a
gallery per stage and reason of sampled clips (accepted ones too) with thumbnails and scores,
a per-source drill-down, and the manifest's config, versions and hashes.

Charts use **plotly**: interactive histograms (zoom, hover counts, a legend to hide one side)
from one Python figure description, an offline JS bundle shipped inside the wheel (written once
to ``assets/plotly.min.js``, no CDN), and a well-maintained library; the what-if controls need
JS in the page anyway, and plotly's ``relayout`` moves a threshold line without redrawing.

What-if: :data:`RULES` states each re-thresholdable config key declaratively (stage, score
column, which side rejects). The page holds, per stage, the scores of the clips that reached it
(exact float64, base64) and applies all rules of the stage, as ``javis refilter --dry-run``
does with the stage's ``decide``: a clip that ended at an earlier stage is not re-decided; one
that reached the stage is rejected there if any rule rejects it. :func:`count_rejected` is the
same logic in Python (tested against refilter). Stages decided before the filters
(``clip_length``, ``sound``) are plotted but have no control: refilter cannot re-decide them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import report_page
from pipeline.audit import audit_json
from pipeline.config import Config, config_from_dict
from pipeline.dag import active_stages, funnel_stages
from pipeline.outputs import CONFIG_JSON, MANIFEST, as_storage, read_ledger
from schemas import Col, Kind, State, component_columns, metric_columns
from stages.storage import Storage, is_uri

log = logging.getLogger(__name__)

PER_GROUP = 12  # gallery clips per (stage, reason): enough to see a pattern, small at 10,000 clips


@dataclasses.dataclass(frozen=True)
class Rule:
    """One threshold of a stage's decision: a clip is rejected when ``column`` is above
    (``rejects_above``) or below the value of config ``key``. A threshold set to None is off.
    ``missing_rejects``: a scored clip with no value is rejected whatever the threshold
    (aesthetic's ``no_frames``); otherwise a missing value never rejects. ``backend``: the rule
    holds only when the stage's config selects this backend."""

    key: str  # section.field of the config
    column: str
    rejects_above: bool
    missing_rejects: bool = False
    backend: str | None = None
    integer: bool = False  # the config field is an int
    effective: str | None = None  # attribute with the threshold in force when the field is None (a default)

    @property
    def stage(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.key.split(".", 1)[1]

    def applies(self, config: Config) -> bool:
        section = getattr(config, self.stage)
        return self.backend is None or getattr(section, "backend", None) == self.backend

    def current(self, config: Config) -> float | None:
        """The threshold the run used."""
        return getattr(getattr(config, self.stage), self.effective or self.field)

    def rejects(self, value: float | None, threshold: float | None) -> bool:
        if value is None:
            return self.missing_rejects
        if threshold is None:
            return False
        return value > threshold if self.rejects_above else value < threshold  # NaN: never, as in decide


# the re-thresholdable keys: each mirrors its stage's ``decide`` (stages/aesthetic.py, motion.py,
# speech.py, ocr.py, av_sync.py); content's decision has no numeric threshold (category flags)
RULES: tuple[Rule, ...] = (
    Rule("aesthetic.min_image_quality", Col.AESTHETIC_IQ_MEAN, False, True, "image_quality"),
    Rule("aesthetic.min_laion_score", Col.AESTHETIC_LAION_MEAN, False, True, "laion"),
    Rule("motion.min_flow", Col.MOTION_FLOW_MEAN, False),
    Rule("speech.max_speech_ratio", Col.SPEECH_RATIO, True),
    Rule("speech.max_speech_longest_s", Col.SPEECH_LONGEST_S, True),
    Rule("ocr.max_regions", Col.OCR_NUM_REGIONS, True, integer=True),
    Rule("ocr.max_text_area_fraction", Col.OCR_TEXT_AREA_FRACTION, True),
    Rule("av_sync.min_score", Col.AV_SYNC_SCORE, False, effective="threshold"),  # None: the backend's default
)
# decided before the filters from values refilter does not re-decide: plotted, no what-if
# (sound's partial_audio threshold depends on each clip's frame rate, so it is not plotted)
FIXED_RULES: tuple[Rule, ...] = (
    Rule("clip_length.min_clip_s", Col.CLIP_DURATION_S, False),
    Rule("sound.min_mean_dbfs", Col.SOUND_MEAN_DBFS, False),
)


def stage_rules(config: Config) -> dict[str, list[Rule]]:
    """The rules of every enabled re-thresholdable stage, by stage, in pipeline order."""
    specs = {s.name: s for s in active_stages(config) if s.decide is not None}
    found: dict[str, list[Rule]] = {}
    for rule in RULES:
        if rule.stage in specs and rule.applies(config):
            found.setdefault(rule.stage, []).append(rule)
    return {name: found[name] for name in specs if name in found}


def reached(rows: list[dict[str, Any]], stage: str, config: Config, ran_column: str | None = None) -> list[int]:
    """Indexes of the clips that reached ``stage``: accepted, ended at a later stage, or
    rejected there (a clip that failed there has no decision to redo). With ``ran_column``:
    only those the stage scored."""
    order = {name: i for i, (name, _) in enumerate(funnel_stages(config))}
    here = order[stage]
    keep = []
    for i, r in enumerate(rows):
        if r[Col.KIND] != Kind.CLIP or (ran_column is not None and r.get(ran_column) is None):
            continue
        ended = math.inf if r[Col.STATE] == State.ACCEPTED else order.get(r[Col.STAGE], -1)
        if ended > here or (ended == here and r[Col.STATE] == State.REJECTED):
            keep.append(i)
    return keep


def count_rejected(
    rules: list[Rule], columns: dict[str, list[float | None]], thresholds: dict[str, float | None]
) -> int:
    """How many clips (``columns``: one value list per rule column) any rule rejects."""
    num = len(next(iter(columns.values()))) if columns else 0
    return sum(
        1 for i in range(num) if any(r.rejects(columns[r.column][i], thresholds.get(r.key)) for r in rules)
    )  # fmt: skip


def _f64(values: list[float | None]) -> str:
    """Exact float64 values (NaN for missing: ``nulls`` tells a missing value from a stored
    NaN), little-endian, base64: the page compares the same doubles refilter does."""
    array = np.array([math.nan if v is None else float(v) for v in values], dtype="<f8")
    return base64.b64encode(array.tobytes()).decode()


def whatif_data(rows: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    """Per re-thresholdable stage: its rules, thresholds and the scores of the clips that reached it."""
    specs = {s.name: s for s in active_stages(config)}
    stages = []
    for stage, rules in stage_rules(config).items():
        index = reached(rows, stage, config, specs[stage].ran_column)
        columns = {r.column: [rows[i].get(r.column) for i in index] for r in rules}
        thresholds = {r.key: r.current(config) for r in rules}
        rejected_here = [rows[i][Col.STATE] == State.REJECTED and rows[i][Col.STAGE] == stage for i in index]
        stages.append({
            "stage": stage,
            "num_reached": len(index),
            "num_rejected": sum(rejected_here),
            "rules": [{"key": r.key, "column": r.column, "above": r.rejects_above,
                       "missing_rejects": r.missing_rejects, "integer": r.integer} for r in rules],
            "thresholds": thresholds,
            "columns": {c: _f64(v) for c, v in columns.items()},
            "nulls": {c: [i for i, x in enumerate(v) if x is None] for c, v in columns.items()},
            "rejected_here": rejected_here,
        })  # fmt: skip
    return stages


def histograms(rows: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    """One entry per plotted rule: the reached clips' values, split passed / rejected there."""
    specs = {s.name: s for s in active_stages(config)}
    whatif = {r.key for rules in stage_rules(config).values() for r in rules}
    plotted = [r for r in RULES if r.key in whatif] + [r for r in FIXED_RULES if r.stage in specs]
    found = []
    for rule in plotted:
        index = reached(rows, rule.stage, config, specs[rule.stage].ran_column)
        passed, rejected = [], []
        for i in index:
            value = rows[i].get(rule.column)
            if value is not None and math.isfinite(value):
                here = rows[i][Col.STATE] == State.REJECTED and rows[i][Col.STAGE] == rule.stage
                (rejected if here else passed).append(value)
        threshold = rule.current(config)
        found.append({"rule": rule, "threshold": threshold, "passed": passed, "rejected": rejected,
                      "whatif": rule.key in whatif})  # fmt: skip
    return found


def sample_groups(rows: list[dict[str, Any]], config: Config, per_group: int) -> list[dict[str, Any]]:
    """Gallery groups of clips: each (stage, state, reason) in funnel order, then accepted; at
    most ``per_group`` each, the lowest ids (ids are hashes: an unbiased, repeatable sample)."""
    order = {name: i for i, (name, _) in enumerate(funnel_stages(config))}
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r[Col.KIND] != Kind.CLIP:
            continue
        if r[Col.STATE] == State.ACCEPTED:
            key = (math.inf, "", State.ACCEPTED, "")
        else:
            key = (order.get(r[Col.STAGE], -1), r[Col.STAGE] or "", r[Col.STATE], r[Col.REASON] or "")
        groups.setdefault(key, []).append(i)
    result = []
    for key in sorted(groups):
        index = sorted(groups[key], key=lambda i: rows[i][Col.ID])
        result.append({"stage": key[1], "state": key[2], "reason": key[3], "num": len(index),
                       "clips": index[:per_group]})  # fmt: skip
    return result


def copy_thumbs(storage: Storage, rows: list[dict[str, Any]], index: list[int], assets: Path) -> dict[str, str]:
    """Copy the thumbnails of clips ``index`` into ``assets/thumbs``; clip id -> path relative
    to the page (clips with no thumbnail, or one that is gone, are left out)."""
    folder = assets / "thumbs"
    folder.mkdir(parents=True, exist_ok=True)

    def copy(i: int) -> tuple[str, str] | None:
        clip_id, rel = rows[i][Col.ID], rows[i].get(Col.THUMB_PATH)
        if not rel:
            return None
        try:
            data = storage.read_bytes(rel)
        except (OSError, FileNotFoundError):
            log.warning("thumbnail %s of clip %s is missing", rel, clip_id)
            return None
        name = f"{clip_id}{Path(rel).suffix or '.jpg'}"
        (folder / name).write_bytes(data)
        return clip_id, f"{assets.name}/thumbs/{name}"

    with ThreadPoolExecutor(8) as pool:  # object storage: one round trip per file
        return dict(found for found in pool.map(copy, index) if found is not None)


def _columns_to_read(ledger: pa.Table) -> list[str]:
    wanted = [Col.ID, Col.KIND, Col.SOURCE_ID, Col.INPUT, Col.STATE, Col.STAGE, Col.REASON, Col.METRIC, Col.VALUE,
              Col.THRESHOLD, Col.DETAIL, Col.ERROR_TYPE, Col.ERROR_MESSAGE, Col.CLIP_START_S, Col.CLIP_END_S,
              Col.THUMB_PATH, Col.AESTHETIC_BACKEND, Col.MOTION_BACKEND, Col.SPEECH_BACKEND, Col.OCR_BACKEND,
              Col.CONTENT_NUM_OTHER_SOUND_TYPES, Col.CLIP_DURATION_S]  # fmt: skip
    wanted += metric_columns(ledger.schema) + list(component_columns(ledger.schema))
    return [c for c in dict.fromkeys(wanted) if c in ledger.column_names]


def default_dest(out: str | Path) -> Path:
    """``OUT/report`` for a local run; object storage needs an explicit local ``dest``."""
    if is_uri(str(out)):
        raise ValueError(f"{out} is object storage: pass --dest DIR, a local folder for the report")
    return Path(as_storage(str(out)).base) / "report"


def build_report(out: str | Path, dest: str | Path | None = None, per_group: int = PER_GROUP) -> Path:
    """Write the report of the run in ``out`` (local folder or URI) to ``dest``; its HTML file."""
    if per_group < 0:
        raise ValueError("per_group must be >= 0")
    dest = Path(dest) if dest is not None else default_dest(out)
    storage = as_storage(str(out))
    if not storage.exists(MANIFEST):
        raise FileNotFoundError(f"{out} has no {MANIFEST}: is it the output folder of a finished javis run?")
    manifest = storage.read_json(MANIFEST)
    config = config_from_dict(storage.read_json(CONFIG_JSON) if storage.exists(CONFIG_JSON) else manifest["config"])
    ledger = read_ledger(storage)
    rows = ledger.select(_columns_to_read(ledger)).to_pylist()
    funnel = audit_json(storage)["funnel"]
    assets = dest / "assets"
    if assets.exists():
        shutil.rmtree(assets)  # thumbnails of an earlier report
    assets.mkdir(parents=True)
    groups = sample_groups(rows, config, per_group)
    thumbs = copy_thumbs(storage, rows, [i for g in groups for i in g["clips"]], assets)
    report_page.write_assets(assets)
    page = report_page.render(
        report_page.PageData(
            out=str(out),
            generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            manifest=manifest,
            funnel=funnel,
            rows=rows,
            histograms=histograms(rows, config),
            whatif=whatif_data(rows, config),
            groups=groups,
            thumbs=thumbs,
            components=component_columns(ledger.schema),
            metrics=[m for m in metric_columns(ledger.schema) if m in ledger.column_names],
        )
    )
    path = dest / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
