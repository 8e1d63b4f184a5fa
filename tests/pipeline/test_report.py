"""``javis report``: the what-if rules against ``javis refilter --dry-run`` on a real run, the
page's numbers against ``javis audit --json``, and the page itself in headless chromium."""

from __future__ import annotations

import base64
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.audit import audit_json
from pipeline.cli import main
from pipeline.config import config_from_dict, load_config
from pipeline.dag import STAGES, active_stages
from pipeline.outputs import CONFIG_JSON, read_json, read_ledger
from pipeline.refilter import refilter
from pipeline.report import (
    FIXED_RULES,
    RULES,
    build_report,
    count_rejected,
    default_dest,
    reached,
    stage_rules,
    whatif_data,
)
from pipeline.runner import run
from schemas import Col
from stages.storage import Storage

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def report_run(samples, ray_local, tmp_path_factory):
    """A run of the demo preset on the generated samples (every quality filter on), and its report."""
    out = tmp_path_factory.mktemp("report_run")
    run([str(samples)], out, load_config("demo", overrides=["ray.progress_bars=false"]), show_progress=False)
    return out, build_report(out)


def _rejected_by_refilter(out: Path, key: str, value: float) -> int:
    funnel = refilter(out, [f"{key}={value!r}"], dry_run=True)
    return next(f.rejected for f in funnel if f.stage == key.split(".")[0])


def _values_to_try(values: list[float], current: float | None, integer: bool) -> list[float]:
    """Thresholds around and exactly at stored values (ties decide > against >=)."""
    found = sorted(v for v in values if v is not None and math.isfinite(v))
    picks = {found[0], found[len(found) // 2], found[-1], found[0] - 1, found[-1] + 1} if found else {0.0}
    if current is not None:
        picks.add(current)
    return sorted({float(round(v)) if integer else v for v in picks})


def _decoded(stage: dict) -> dict[str, list[float | None]]:
    """The columns as the page reads them."""
    found = {}
    for column, b64 in stage["columns"].items():
        values = [float(v) for v in np.frombuffer(base64.b64decode(b64), dtype="<f8")]
        nulls = set(stage["nulls"][column])
        found[column] = [None if i in nulls else v for i, v in enumerate(values)]
    return found


def test_rules_cover_every_threshold_a_decide_stage_has():
    config = load_config("demo")
    keyed = {r.stage for r in RULES}
    for spec in STAGES:
        if spec.decide is not None and spec.name != "content":  # content: category flags, no threshold
            assert spec.name in keyed, spec.name
    for rule in RULES + FIXED_RULES:
        assert hasattr(getattr(config, rule.stage), rule.field), rule.key
    assert set(stage_rules(config)) == {"aesthetic", "motion", "speech", "ocr"}
    assert [r.key for r in stage_rules(config)["aesthetic"]] == ["aesthetic.min_image_quality"]  # its backend's


@pytest.mark.parametrize(
    "overrides",
    [
        ["aesthetic.min_image_quality=3.0"],
        ["motion.min_flow=0.2"],
        ["speech.max_speech_ratio=0.2", "speech.max_speech_longest_s=0.5"],
        ["speech.max_speech_ratio=0.5"],  # max_speech_longest_s off
        ["ocr.max_regions=3", "ocr.max_text_area_fraction=0.2"],
    ],
)
def test_rules_decide_as_the_stage_does(overrides):
    """Synthetic scores with known answers: ties, missing values, NaN, an optional threshold off."""
    import itertools

    config = load_config("demo", overrides=overrides)
    stage = overrides[0].split(".")[0]
    rules = stage_rules(config)[stage]
    decide = next(s.decide for s in STAGES if s.name == stage)
    thresholds = {r.key: getattr(getattr(config, stage), r.field) for r in rules}
    values = [0.0, 0.2, 0.5, 3.0, 9.0, math.nan, None]
    for combo in itertools.product(values, repeat=len(rules)):
        row = {r.column: v for r, v in zip(rules, combo)}
        try:
            expected = decide(getattr(config, stage), row) is not None
        except (ValueError, TypeError):  # the stage never scored such a row: not a what-if case
            continue
        assert any(r.rejects(row[r.column], thresholds[r.key]) for r in rules) == expected, row


@pytest.mark.slow
def test_whatif_rules_count_what_refilter_dry_run_rejects(report_run):
    out, _ = report_run
    config = config_from_dict(read_json(out, CONFIG_JSON))
    rows = read_ledger(out).to_pylist()
    checked = 0
    for stage in whatif_data(rows, config):
        rules = [r for r in RULES if r.key in stage["thresholds"]]
        columns = _decoded(stage)  # what the page holds: exact float64
        assert count_rejected(rules, columns, stage["thresholds"]) == stage["num_rejected"]
        for rule in rules:
            for value in _values_to_try(columns[rule.column], stage["thresholds"][rule.key], rule.integer):
                thresholds = {**stage["thresholds"], rule.key: value}
                try:
                    expected = _rejected_by_refilter(out, rule.key, value)
                except ValueError:  # outside the key's valid range
                    continue
                assert count_rejected(rules, columns, thresholds) == expected, (rule.key, value)
                checked += 1
    assert checked >= 15


@pytest.mark.slow
def test_reached_leaves_out_clips_that_ended_earlier(report_run):
    out, _ = report_run
    config = config_from_dict(read_json(out, CONFIG_JSON))
    rows = read_ledger(out).to_pylist()
    index = reached(rows, "motion", config, Col.MOTION_BACKEND)
    assert index and all(rows[i][Col.STAGE] not in ("clip_length", "sound", "aesthetic") for i in index)
    assert all(rows[i][Col.MOTION_FLOW_MEAN] is not None for i in index)


def _page_funnel(page: str) -> dict[str, dict[str, int]]:
    found = {}
    for stage, cells in re.findall(r'<tr data-stage="([^"]+)">(.*?)</tr>', page):
        found[stage] = {k: int(v) for k, v in re.findall(r'data-field="(\w+)">(\d+)<', cells)}
    return found


@pytest.mark.slow
def test_report_is_self_contained_and_its_funnel_is_audits(report_run):
    out, page_path = report_run
    page = page_path.read_text()
    assert page_path == out / "report" / "index.html"
    audit = {f["stage"]: {k: f[k] for k in ("in", "passed", "rejected", "failed")} for f in audit_json(out)["funnel"]}
    assert _page_funnel(page) == audit
    sources = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="([^"]+)"', page)
    assert all(not s.startswith(("http:", "https:", "//")) for s in sources), sources
    for src in sources:
        assert src.startswith("data:") or (page_path.parent / src).is_file(), src
    assert '<script src="assets/plotly.min.js">' in page
    assert "too_much_text" in page and 'class="card accepted"' in page  # galleries: rejected and accepted


@pytest.mark.slow
def test_missing_thumbnail_gets_a_placeholder(report_run, tmp_path):
    out, _ = report_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    thumbs = [r[Col.THUMB_PATH] for r in read_ledger(copy).to_pylist() if r.get(Col.THUMB_PATH)]
    for rel in thumbs:
        (copy / rel).unlink()
    page = build_report(copy, per_group=2).read_text()
    assert 'class="thumb placeholder"' in page and 'class="thumb"' not in page


@pytest.mark.slow
def test_report_of_object_storage_needs_a_local_dest(report_run, s3_server, tmp_path):
    out, _ = report_run
    with pytest.raises(ValueError, match="--dest"):
        default_dest("s3://javis-test/report-run")
    storage = Storage("s3://javis-test/report-run")
    for path in out.rglob("*"):
        if path.is_file() and "report" not in path.relative_to(out).parts:
            storage.put_file(path, path.relative_to(out).as_posix())
    page = build_report("s3://javis-test/report-run", tmp_path / "rep")
    local = (out / "report" / "index.html").read_text()
    assert _page_funnel(page.read_text()) == _page_funnel(local)
    assert sorted(p.name for p in (tmp_path / "rep/assets/thumbs").iterdir()) == sorted(
        p.name for p in (out / "report/assets/thumbs").iterdir()
    )


@pytest.mark.slow
def test_cli_report(report_run, tmp_path):
    out, _ = report_run
    result = CliRunner().invoke(main, ["report", str(out), "--dest", str(tmp_path / "r"), "--per-group", "1"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "r" / "index.html") in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "is it the output folder of a finished javis run?" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- the page in a real browser --------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,2000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _count(driver, key: str) -> int:
    return int(driver.find_element("css selector", f'.whatif[data-key="{key}"] .whatif-count').text)


@pytest.mark.slow
def test_page_in_chromium(report_run, browser):
    from selenium.webdriver.common.keys import Keys

    out, page_path = report_run
    browser.get(page_path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.execute_script("return typeof Plotly") == "object"  # the local bundle loaded
    # every script, style sheet, image and link resolves on disk (Chrome keeps no resource timing for file://)
    urls = browser.execute_script("return [...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)")
    assert urls and all(url.startswith(("file://", "data:")) for url in urls), urls
    # funnel: the numbers audit --json gives
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#funnel-table tbody tr')].map(tr => [tr.dataset.stage,"
        " Object.fromEntries([...tr.querySelectorAll('[data-field]')].map(td => [td.dataset.field, +td.textContent]))])"
    )
    audit = {f["stage"]: {k: f[k] for k in ("in", "passed", "rejected", "failed")} for f in audit_json(out)["funnel"]}
    assert dict(shown) == audit
    # what-if: typing a threshold, then moving the slider, shows what refilter --dry-run says
    key = "motion.min_flow"
    number = browser.find_element("css selector", f'.whatif[data-key="{key}"] .whatif-number')
    for value in ("0.05", "0.0001", "0.2"):
        number.clear()
        number.send_keys(value)
        assert _count(browser, key) == _rejected_by_refilter(out, key, float(value)), value
    browser.find_element("css selector", f'.whatif[data-key="{key}"] .whatif-range').send_keys(Keys.ARROW_LEFT)
    moved = float(number.get_attribute("value"))
    assert moved < 0.2 and _count(browser, key) == _rejected_by_refilter(out, key, moved)
    key = "ocr.max_regions"
    number = browser.find_element("css selector", f'.whatif[data-key="{key}"] .whatif-number')
    number.clear()
    number.send_keys("1")
    assert _count(browser, key) == _rejected_by_refilter(out, key, 1)
    # thumbnails: every image loaded, and the run's own thumbnails are among them
    widths = browser.execute_script("return [...document.images].map(i => [i.className, i.complete && i.naturalWidth])")
    assert widths and all(w > 0 for _, w in widths), widths
    if any(r.get(Col.THUMB_PATH) for r in read_ledger(out).to_pylist()):
        assert any(c == "thumb" for c, _ in widths)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@pytest.mark.slow
def test_report_of_a_run_without_filters_has_no_controls(samples, ray_local, tmp_path):
    config = load_config("demo-spine", overrides=["ray.progress_bars=false"])
    assert not stage_rules(config) and not any(s.decide for s in active_stages(config))
    run([str(samples / "three_scenes.mp4")], tmp_path, config, show_progress=False)
    page = build_report(tmp_path).read_text()
    assert 'class="whatif"' not in page and "clip_length.min_clip_s" in page
