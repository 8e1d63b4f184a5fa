"""The HTML of ``javis report`` (see :mod:`pipeline.report` for what it shows and why plotly).

Everything here turns collected data into markup: plotly figures (``include_plotlyjs=False``:
the bundle is written once to ``assets/plotly.min.js`` and loaded by a relative ``<script>``),
the gallery, the drill-down and the manifest tables. The what-if logic runs in
``assets/report.js`` (:data:`SCRIPT`), which mirrors ``pipeline.report.Rule.rejects``.
Over 400 lines: about 150 are the page's style and script, kept here as strings so that the
package needs no data files.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from schemas import Col, Kind, State

ASSETS_DIR = "assets"
PLACEHOLDER = "no_thumb.svg"
NUM_BINS = 40  # histogram bins per metric
COLOURS = {"passed": "#4c9a6a", "rejected": "#d9534f", "failed": "#8c6bb1"}


@dataclasses.dataclass
class PageData:
    out: str
    generated_at: str
    manifest: dict[str, Any]
    funnel: list[dict[str, Any]]  # audit_json's funnel
    rows: list[dict[str, Any]]  # ledger rows (the columns the page reads)
    histograms: list[dict[str, Any]]
    whatif: list[dict[str, Any]]
    groups: list[dict[str, Any]]  # gallery groups (row indexes)
    thumbs: dict[str, str]  # clip id -> thumbnail path relative to the page
    components: dict[str, str]  # component column -> the metric it explains
    metrics: list[str]


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return esc(value)


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` can end it early)."""
    return json.dumps(data, separators=(",", ":"), default=str).replace("<", "\\u003c")


def write_assets(assets: Path) -> None:
    """The plotly bundle (from the installed package: no CDN), the page's script, style and
    the placeholder for a clip with no thumbnail."""
    from plotly.offline import get_plotlyjs

    (assets / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    (assets / "report.js").write_text(SCRIPT, encoding="utf-8")
    (assets / "report.css").write_text(STYLE, encoding="utf-8")
    (assets / PLACEHOLDER).write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="480" height="90"><rect width="480" height="90" '
        'fill="#ddd"/><text x="240" y="50" font-family="sans-serif" font-size="16" text-anchor="middle" '
        'fill="#777">no thumbnail</text></svg>',
        encoding="utf-8",
    )


def _figure_html(fig: Any, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})  # fmt: skip


def funnel_section(funnel: list[dict[str, Any]]) -> str:
    import plotly.graph_objects as go

    labels = [f"{f['stage']} ({f['unit']})" for f in funnel]
    fig = go.Figure()
    for field in ("passed", "rejected", "failed"):
        hover = [", ".join(f"{k}={v}" for k, v in f["reasons"].items()) if field == "rejected" else "" for f in funnel]
        fig.add_bar(y=labels, x=[f[field] for f in funnel], name=field, orientation="h",
                    marker_color=COLOURS[field], hovertext=hover)  # fmt: skip
    fig.update_layout(barmode="stack", height=60 + 26 * len(funnel), margin={"l": 10, "r": 10, "t": 10, "b": 30},
                      yaxis={"autorange": "reversed"}, legend={"orientation": "h"})  # fmt: skip
    rows = []
    for f in funnel:
        reasons = " ".join(
            f'<span class="reason" data-reason="{esc(k)}">{esc(k)}={v}</span>' for k, v in f["reasons"].items()
        )
        cells = "".join(f'<td class="num" data-field="{k}">{f[k]}</td>' for k in ("in", "passed", "rejected", "failed"))
        rows.append(
            f'<tr data-stage="{esc(f["stage"])}"><td>{esc(f["stage"])}</td><td>{esc(f["unit"])}</td>{cells}<td>{reasons}</td></tr>'
        )
    table = ('<table id="funnel-table"><thead><tr><th>stage</th><th>unit</th><th>in</th><th>passed</th>'
             "<th>rejected</th><th>failed</th><th>reasons</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")  # fmt: skip
    return ('<section id="funnel"><h2>Funnel</h2><p>Per stage: <code>in = passed + rejected + failed</code> '
            "(the numbers of <code>javis audit OUT --json</code>).</p>" + _figure_html(fig, "funnel-chart") + table + "</section>")  # fmt: skip


def _side_counts(values: list[float], threshold: float | None, above: bool) -> str:
    if threshold is None:
        return f"{len(values)} clips (threshold off)"
    low = sum(1 for v in values if (v <= threshold if above else v < threshold))
    lo_op, hi_op = ("≤", ">") if above else ("<", "≥")
    return f"{lo_op} {threshold:g}: {low} clips · {hi_op} {threshold:g}: {len(values) - low} clips"


def histogram_figure(entry: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    rule, threshold = entry["rule"], entry["threshold"]
    values = entry["passed"] + entry["rejected"]
    span = values + ([threshold] if threshold is not None else [])  # the line is always in view
    lo, hi = (min(span), max(span)) if span else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    size = (hi - lo) / NUM_BINS
    if rule.integer:
        lo, size = lo - 0.5, max(1.0, math.ceil(size))
    fig = go.Figure()
    for side, vals in (("passed", entry["passed"]), ("rejected", entry["rejected"])):
        fig.add_histogram(x=np.asarray(vals, dtype=np.float32), name=f"{side} {rule.stage}" if side == "passed"
                          else f"rejected at {rule.stage}", marker_color=COLOURS[side],
                          xbins={"start": lo, "end": hi + size, "size": size})  # fmt: skip
    fig.update_layout(
        barmode="stack", height=280, margin={"l": 40, "r": 10, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.25},
        title={"text": f"{rule.column} <span style='font-size:12px'>({rule.key})</span>", "font": {"size": 14}},
        xaxis_title=rule.column, yaxis_title="clips",
        shapes=[{"type": "line", "xref": "x", "yref": "paper", "x0": threshold or 0, "x1": threshold or 0, "y0": 0,
                 "y1": 1, "line": {"dash": "dash", "color": "#222", "width": 2}, "visible": threshold is not None}],
        annotations=[{"xref": "paper", "yref": "paper", "x": 1, "y": 1.12, "showarrow": False, "xanchor": "right",
                      "text": _side_counts(values, threshold, rule.rejects_above)}],
    )  # fmt: skip
    return _figure_html(fig, "hist-" + rule.key.replace(".", "-"))


def _control(entry: dict[str, Any], whatif: dict[str, Any]) -> str:
    rule, threshold = entry["rule"], entry["threshold"]
    values = entry["passed"] + entry["rejected"] + ([threshold] if threshold is not None else [])
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    step = "1" if rule.integer else f"{(hi - lo) / 500:.6g}"
    value = "" if threshold is None else repr(threshold)
    stage = esc(rule.stage)
    return (
        f'<div class="whatif" data-key="{esc(rule.key)}" data-stage="{stage}">'
        f"<label>what if <code>{esc(rule.key)}</code> = "
        f'<input type="number" class="whatif-number" step="any" value="{value}" placeholder="off"></label> '
        f'<input type="range" class="whatif-range" min="{lo:.6g}" max="{hi:.6g}" step="{step}" value="{value or lo}"> '
        f'<button type="button" class="whatif-reset">reset</button>'
        f'<p><b>{stage}</b> would reject <b class="whatif-count" data-stage="{stage}">{whatif["num_rejected"]}</b> '
        f"of the {whatif['num_reached']} clips that reached it (the run rejected {whatif['num_rejected']}). "
        f'Same as <code class="whatif-cmd"></code></p></div>'
    )


def thresholds_section(data: PageData) -> str:
    whatif = {w["stage"]: w for w in data.whatif}
    parts = []
    for entry in data.histograms:
        rule = entry["rule"]
        note = (_control(entry, whatif[rule.stage]) if entry["whatif"] else
                '<p class="note">Decided before the filters: <code>javis refilter</code> cannot re-decide this '
                "stage; a new value needs <code>javis run</code>.</p>")  # fmt: skip
        parts.append(f'<div class="metric">{histogram_figure(entry)}{note}</div>')
    intro = ("<p>Each histogram holds the clips that reached the stage: passed there or rejected there. "
             "The controls recompute from the stored scores how many clips the stage would reject at another "
             "value, as <code>javis refilter OUT --set KEY=VALUE --dry-run</code> does: clips that ended at an "
             "earlier stage are not re-decided.</p>")  # fmt: skip
    return f'<section id="thresholds"><h2>Scores and thresholds</h2>{intro}{"".join(parts)}</section>'


def _scores(row: dict[str, Any], data: PageData) -> str:
    parts_of: dict[str, list[str]] = defaultdict(list)
    for component, metric in data.components.items():
        if row.get(component) is not None:
            short = component.removeprefix(metric.rsplit("_", 1)[0] + "_")
            parts_of[metric].append(f"{esc(short)} {fmt(row[component])}")
    items = []
    for metric in data.metrics:
        if row.get(metric) is None:
            continue
        parts = f" <small>({' · '.join(parts_of[metric])})</small>" if parts_of.get(metric) else ""
        strong = metric == row.get(Col.METRIC)
        text = f"{esc(metric)} = {fmt(row[metric])}{parts}"
        items.append(f"<li><b>{text}</b></li>" if strong else f"<li>{text}</li>")
    return f'<ul class="scores">{"".join(items)}</ul>'


def _card(row: dict[str, Any], data: PageData) -> str:
    thumb = data.thumbs.get(row[Col.ID])
    img = (f'<img class="thumb" src="{esc(thumb)}" alt="frames of {esc(row[Col.ID])}">' if thumb else
           f'<img class="thumb placeholder" src="{ASSETS_DIR}/{PLACEHOLDER}" width="480" height="90" alt="no thumbnail">')  # fmt: skip
    span = ""
    if row.get(Col.CLIP_START_S) is not None:
        span = f" {row[Col.CLIP_START_S]:.1f}–{row[Col.CLIP_END_S]:.1f} s"
    decision = ""
    if row[Col.STATE] == State.REJECTED and row.get(Col.METRIC):
        op = "<" if (row[Col.VALUE] or 0) < (row[Col.THRESHOLD] or 0) else ">"
        decision = f"{esc(row[Col.METRIC])} = {fmt(row[Col.VALUE])} {op} {fmt(row[Col.THRESHOLD])}"
    elif row[Col.STATE] == State.FAILED:
        decision = f"{esc(row.get(Col.ERROR_TYPE))}: {esc(row.get(Col.ERROR_MESSAGE))}"
    detail = f'<div class="detail">{esc(row[Col.DETAIL])}</div>' if row.get(Col.DETAIL) else ""
    return (f'<figure class="card {esc(row[Col.STATE])}" data-id="{esc(row[Col.ID])}">{img}<figcaption>'
            f'<code title="{esc(row[Col.ID])}">{esc(row[Col.ID][:12])}</code> {esc(Path(row[Col.INPUT] or "").name)}{span}'
            f'<div class="decision">{decision}</div>{detail}{_scores(row, data)}</figcaption></figure>')  # fmt: skip


def _clips(num: int) -> str:
    return f"{num} clip" if num == 1 else f"{num} clips"


def gallery_section(data: PageData) -> str:
    parts = []
    for group in data.groups:
        title = (
            "accepted"
            if group["state"] == State.ACCEPTED
            else f"{group['stage']} · {group['state']} · {group['reason']}"
        )
        cards = "".join(_card(data.rows[i], data) for i in group["clips"])
        parts.append(f'<details class="group" open><summary>{esc(title)} <small>({_clips(group["num"])}, showing '
                     f'{len(group["clips"])})</small></summary><div class="cards">{cards}</div></details>')  # fmt: skip
    return ('<section id="gallery"><h2>Gallery</h2><p>A sample of clips per stage and reason (the lowest ids), '
            "with the frames at 10, 50 and 90 % of each clip and its scores; components of a score in brackets."
            f'</p><div class="groups">{"".join(parts)}</div></section>')  # fmt: skip


def sources_section(data: PageData) -> str:
    clips: dict[str, list[dict[str, Any]]] = defaultdict(list)
    sources = []
    for row in data.rows:
        (sources if row[Col.KIND] == Kind.SOURCE else clips[row[Col.SOURCE_ID]]).append(row)
    parts = []
    for src in sorted(sources, key=lambda r: r[Col.INPUT] or ""):
        own = sorted(clips.get(src[Col.ID], []), key=lambda r: r[Col.CLIP_START_S] or 0.0)
        states = Counter(r[Col.STATE] for r in own)
        where = (
            f" at {src[Col.STAGE]}: {src[Col.REASON] or src.get(Col.ERROR_TYPE)}"
            if src[Col.STATE] != State.ACCEPTED
            else ""
        )
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        lines = "".join(
            f'<tr class="{esc(c[Col.STATE])}"><td><code>{esc(c[Col.ID][:12])}</code></td>'
            f"<td>{fmt(c[Col.CLIP_START_S])}–{fmt(c[Col.CLIP_END_S])}</td><td>{esc(c[Col.STATE])}</td>"
            f"<td>{esc(c[Col.STAGE])}</td><td>{esc(c[Col.REASON])}</td>"
            f"<td>{esc(c[Col.METRIC])} {fmt(c[Col.VALUE]) if c[Col.VALUE] is not None else ''}</td></tr>"
            for c in own
        )
        table = ("<table><tr><th>clip</th><th>s</th><th>state</th><th>stage</th><th>reason</th><th>value</th></tr>"
                 f"{lines}</table>") if own else ""  # fmt: skip
        parts.append(f'<details class="source {esc(src[Col.STATE])}"><summary><code>{esc(src[Col.ID][:12])}</code> '
                     f'<span title="{esc(src[Col.INPUT])}">{esc(Path(src[Col.INPUT] or "").name)}</span>: '
                     f"{esc(src[Col.STATE])}{esc(where)} <small>({_clips(len(own))}{': ' + counts if counts else ''})"
                     f"</small></summary>{table}</details>")  # fmt: skip
    return f'<section id="sources"><h2>Sources ({len(sources)})</h2>{"".join(parts)}</section>'


def _kv_table(values: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)}</td></tr>"
        for k, v in values.items()
    )
    return f"<table class='kv'>{rows}</table>"


def manifest_section(manifest: dict[str, Any]) -> str:
    head = {k: manifest.get(k) for k in ("javis_version", "schema_version", "stages", "disabled_stages")}
    parts = [_kv_table(head), "<h3>Run</h3>", _kv_table(manifest.get("run", {})),
             "<h3>Config hashes (recorded with every decision)</h3>", _kv_table(manifest.get("config_hashes", {})),
             "<h3>Versions</h3>", _kv_table(manifest.get("versions", {}))]  # fmt: skip
    if manifest.get("refilters"):
        parts += ["<h3>Refilters</h3>", f"<pre>{esc(json.dumps(manifest['refilters'], indent=2))}</pre>"]
    parts.append(
        f"<details><summary>Config</summary><pre>{esc(json.dumps(manifest.get('config'), indent=2))}</pre></details>"
    )
    return f'<section id="manifest"><h2>Manifest</h2>{"".join(parts)}</section>'


def render(data: PageData) -> str:
    clips = Counter(r[Col.STATE] for r in data.rows if r[Col.KIND] == Kind.CLIP)
    num_sources = sum(1 for r in data.rows if r[Col.KIND] == Kind.SOURCE)
    summary = (f"{num_sources} sources, {sum(clips.values())} clips: "
               + ", ".join(f"{n} {s}" for s, n in sorted(clips.items())))  # fmt: skip
    payload = {"out": data.out, "whatif": [{k: v for k, v in w.items() if k != "rejected_here"} for w in data.whatif]}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>javis report: {esc(data.out)}</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="{ASSETS_DIR}/report.css">
<script src="{ASSETS_DIR}/plotly.min.js"></script></head>
<body><header><h1>javis report</h1><p><code>{esc(data.out)}</code> · {esc(summary)} · generated {esc(data.generated_at)}</p>
<nav><a href="#funnel">funnel</a> <a href="#thresholds">scores and thresholds</a> <a href="#gallery">gallery</a>
<a href="#sources">sources</a> <a href="#manifest">manifest</a></nav></header><main>
{funnel_section(data.funnel)}
{thresholds_section(data)}
{gallery_section(data)}
{sources_section(data)}
{manifest_section(data.manifest)}
</main><script type="application/json" id="report-data">{script_json(payload)}</script>
<script src="{ASSETS_DIR}/report.js"></script></body></html>
"""


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #233; color: #eee; padding: 8px 20px; position: sticky; top: 0; z-index: 10; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 2px 0; } nav a { color: #9cf; margin-right: 12px; }
main { padding: 0 20px 40px; max-width: 1400px; }
section { margin-top: 24px; } h2 { border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .reason { margin-right: 8px; white-space: nowrap; }
#thresholds { display: grid; grid-template-columns: repeat(auto-fill, minmax(620px, 1fr)); gap: 12px; }
#thresholds > h2, #thresholds > p { grid-column: 1 / -1; }
.metric { background: #fff; border: 1px solid #ddd; padding: 6px; }
.whatif { background: #eef4fb; padding: 6px 8px; } .whatif input[type=range] { width: 50%; vertical-align: middle; }
.whatif input[type=number] { width: 8em; } .whatif-count { font-size: 16px; color: #b22; } .note { color: #666; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
.card { width: 330px; margin: 0; background: #fff; border: 1px solid #ddd; border-top: 4px solid #999; padding: 4px; font-size: 12px; }
.card.accepted { border-top-color: #4c9a6a; } .card.rejected { border-top-color: #d9534f; } .card.failed { border-top-color: #8c6bb1; }
.card img { width: 100%; height: auto; display: block; background: #ddd; }
.decision { font-weight: bold; color: #a22; } .detail { color: #555; }
.scores { margin: 2px 0; padding: 0; list-style: none; } .scores li { display: inline-block; margin-right: 8px; }
section { scroll-margin-top: 80px; }
.groups { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: flex-start; } details.group { margin: 6px 0; } summary { cursor: pointer; } details.group > summary { font-weight: bold; font-size: 15px; }
details.source { margin: 2px 0; } tr.rejected td:nth-child(3) { color: #b22; } tr.accepted td:nth-child(3) { color: #282; }
pre { background: #fff; border: 1px solid #ddd; padding: 8px; overflow: auto; max-height: 600px; }
table.kv th { width: 18em; }
"""

# The what-if logic: the same test as pipeline.report.Rule.rejects, on the same float64 values.
SCRIPT = r"""
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  function f64(b64) {
    const text = atob(b64), bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new Float64Array(bytes.buffer);
  }
  function rejects(rule, v, isNull, t) {
    if (isNull) return rule.missing_rejects;
    if (t === null || t === undefined) return false;
    return rule.above ? v > t : v < t;  // NaN: never, as in decide
  }
  const stages = {};
  for (const spec of DATA.whatif) {
    const cols = {}, nulls = {};
    for (const [name, b64] of Object.entries(spec.columns)) cols[name] = f64(b64);
    for (const [name, index] of Object.entries(spec.nulls)) nulls[name] = new Set(index);
    stages[spec.stage] = {spec: spec, cols: cols, nulls: nulls, thresholds: Object.assign({}, spec.thresholds)};
  }
  function countRejected(st) {
    let num = 0;
    for (let i = 0; i < st.spec.num_reached; i++) {
      for (const rule of st.spec.rules) {
        const isNull = st.nulls[rule.column].has(i);
        if (rejects(rule, st.cols[rule.column][i], isNull, st.thresholds[rule.key])) { num++; break; }
      }
    }
    return num;
  }
  function sideText(rule, values, t) {
    let n = 0, low = 0;
    for (const v of values) { if (Number.isNaN(v)) continue; n++; if (rule.above ? v <= t : v < t) low++; }
    if (t === null) return n + " clips (threshold off)";
    const ops = rule.above ? ["\u2264", ">"] : ["<", "\u2265"];
    return ops[0] + " " + t + ": " + low + " clips \u00b7 " + ops[1] + " " + t + ": " + (n - low) + " clips";
  }
  function update(stageName) {
    const st = stages[stageName];
    const num = countRejected(st);
    document.querySelectorAll('.whatif-count[data-stage="' + stageName + '"]').forEach(e => { e.textContent = num; });
    for (const rule of st.spec.rules) {
      const box = document.querySelector('.whatif[data-key="' + rule.key + '"]');
      const t = st.thresholds[rule.key];
      if (box) {
        const set = t === null ? "" : " --set " + rule.key + "=" + t;
        box.querySelector(".whatif-cmd").textContent = "javis refilter " + DATA.out + set + " --dry-run";
      }
      const fig = document.getElementById("hist-" + rule.key.replace(".", "-"));
      if (fig && window.Plotly && fig.layout) {
        Plotly.relayout(fig, {"shapes[0].x0": t, "shapes[0].x1": t, "shapes[0].visible": t !== null,
                              "annotations[0].text": sideText(rule, st.cols[rule.column], t)});
      }
    }
  }
  function parse(rule, text) {
    if (text.trim() === "") return null;
    const v = parseFloat(text);
    if (!Number.isFinite(v)) return undefined;
    return rule.integer ? Math.round(v) : v;
  }
  for (const box of document.querySelectorAll(".whatif")) {
    const st = stages[box.dataset.stage];
    const rule = st.spec.rules.find(r => r.key === box.dataset.key);
    const number = box.querySelector(".whatif-number"), range = box.querySelector(".whatif-range");
    const initial = number.value;
    const set = (text, from) => {
      const v = parse(rule, text);
      if (v === undefined) return;
      st.thresholds[rule.key] = v;
      if (from !== number) number.value = v === null ? "" : String(v);
      if (from !== range && v !== null) range.value = v;
      update(box.dataset.stage);
    };
    number.addEventListener("input", () => set(number.value, number));
    number.addEventListener("change", () => set(number.value, number));
    range.addEventListener("input", () => set(range.value, range));
    box.querySelector(".whatif-reset").addEventListener("click", () => set(initial, null));
  }
  for (const name of Object.keys(stages)) update(name);
})();
"""
