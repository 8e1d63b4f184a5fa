"""User mistakes on the command line: one line, a non-zero exit, nothing started or written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import pipeline.runner
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.config_docs import config_keys
from pipeline.inputs import check_plan, plan_sources


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args, **_kwargs):  # noqa: ANN202
        raise AssertionError("Ray was started")

    monkeypatch.setattr(pipeline.runner, "start_ray", refuse)


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize("kind", ["missing path", "missing folder", "empty glob", "empty folder", "empty list"])
def test_an_input_that_names_nothing_fails_before_ray_starts(kind: str, tmp_path: Path, no_ray: None) -> None:
    value = {
        "missing path": tmp_path / "no" / "such.mp4",
        "missing folder": tmp_path / "no" / "such" / "folder",
        "empty glob": tmp_path / "*.mkv",
        "empty folder": tmp_path / "empty",
        "empty list": tmp_path / "urls.txt",
    }[kind]
    (tmp_path / "empty").mkdir()
    (tmp_path / "urls.txt").write_text("# nothing yet\n\n")
    out = tmp_path / "out"
    code, output = _invoke("run", "--input", str(value), "--output", str(out), "--quiet")
    assert code != 0
    line = _one_error_line(output)
    assert "nothing to curate" in line and str(value) in line
    assert not out.exists()  # not even the output folder


def test_good_and_missing_inputs_together_still_run(samples: Path, tmp_path: Path) -> None:
    values = [str(samples / "vfr.mp4"), str(tmp_path / "gone.mp4"), str(tmp_path / "nothing*.mp4")]
    rows = plan_sources(values, load_config().ingest)
    check_plan(rows, values)  # no error: the missing ones are recorded, not fatal
    assert len(rows) == 3


def test_a_run_records_the_missing_inputs_beside_the_good_ones(samples: Path, ray_local, tmp_path: Path) -> None:
    from pipeline.outputs import read_ledger

    config = load_config("demo-spine", overrides=["ray.progress_bars=false"])
    inputs = [str(samples / "vfr.mp4"), str(tmp_path / "gone.mp4"), str(tmp_path / "nothing" / "*.mp4")]
    result = pipeline.runner.run(inputs, tmp_path / "out", config, show_progress=False)
    sources = {r["input"]: r for r in read_ledger(result.output_dir).to_pylist() if r["kind"] == "source"}
    assert sources[inputs[0]]["state"] == "accepted"
    assert (sources[inputs[1]]["state"], sources[inputs[1]]["reason"]) == ("rejected", "missing_file")
    assert (sources[inputs[2]]["state"], sources[inputs[2]]["reason"]) == ("rejected", "no_media_found")


def test_a_bad_set_value_names_the_key_and_the_expected_type(tmp_path: Path, no_ray: None) -> None:
    code, output = _invoke(
        "run", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "--set", "speech.max_speech_ratio=abc"
    )
    assert code != 0
    assert _one_error_line(output) == "Error: --set speech.max_speech_ratio=abc: expected a number (float), got 'abc'"
    assert not (tmp_path / "out").exists()


def test_a_traceback_only_with_verbose(tmp_path: Path, no_ray: None) -> None:
    result = CliRunner().invoke(main, ["run", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "-v",
                                       "--set", "ray.num_cpus=two"])  # fmt: skip
    assert result.exit_code != 0
    assert "Traceback" in result.output and "ConfigTypeError" in result.output
    assert "Error: --set ray.num_cpus=two: expected an integer (int) or null, got 'two'" in result.output


def test_a_bad_value_in_a_config_file_names_the_file_and_key(tmp_path: Path, no_ray: None) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("output:\n  keep_rejected_media: maybe\n")
    code, output = _invoke("run", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "--config", str(path))
    line = _one_error_line(output)
    assert code != 0 and str(path) in line and "output.keep_rejected_media" in line and "(bool)" in line


def test_demo_reports_a_bad_value_the_same_way(tmp_path: Path, no_ray: None) -> None:
    code, output = _invoke("demo", "-o", str(tmp_path / "demo"), "--set", "sound.min_mean_dbfs=loud")
    assert code != 0
    assert _one_error_line(output) == "Error: --set sound.min_mean_dbfs=loud: expected a number (float), got 'loud'"
    assert not (tmp_path / "demo").exists()  # no sample media made either


def test_config_lists_every_key_with_its_preset_value_and_a_doc() -> None:
    code, output = _invoke("config", "--preset", "demo", "--json")
    assert code == 0
    data = json.loads(output)
    keys = {k["key"]: k for k in data["keys"]}
    assert data["preset"] == "demo" and len(keys) == len(data["keys"])
    assert keys["output.shard_max_rows"]["value"] == 4  # the demo preset's, not the default's
    assert keys["resources.cut.num_cpus"]["doc"] and keys["caption_video.llm.model_path"]["doc"]
    code, text = _invoke("config")
    assert code == 0
    assert "  speech.max_speech_ratio = " in text and "[resources]" in text


@pytest.mark.parametrize("preset", ["default", "annotate"])
def test_every_config_key_has_a_doc(preset: str) -> None:
    undocumented = [k.key for k in config_keys(preset) if not k.doc.strip()]
    assert undocumented == []


def test_config_keys_are_the_keys_set_takes() -> None:
    for key in config_keys("default")[::25]:  # a sample across the sections
        value = json.dumps(key.value) if not isinstance(key.value, str) else key.value
        load_config("default", overrides=[f"{key.key}={value}"])
