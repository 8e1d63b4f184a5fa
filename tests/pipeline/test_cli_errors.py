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


# The model commands on folders that lack the previous step's output: which command to run first.


def _fake_run(folder: Path) -> Path:
    """A curated run's layout as far as these checks read it: a manifest and clip shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "shards").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["c1"], "source_id": ["s1"]}), folder / "shards" / "shard-00000.parquet")
    (folder / "manifest.json").write_text("{}")
    return folder


def _fake_latents(folder: Path, preset: str, kinds: list[str]) -> Path:
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    from model.spec import SPECS

    latents = folder / "latents"
    (latents / "shards").mkdir(parents=True)
    table = pa.table({"id": [f"x{i}" for i in range(len(kinds))], "clip_id": ["c1"] * len(kinds), "kind": kinds})
    pq.write_table(table, latents / "shards" / "shard-00000.parquet")
    (latents / "manifest.json").write_text(json.dumps({"spec": dataclasses.asdict(SPECS[preset])}))
    return folder


def _fake_checkpoint(folder: Path, preset: str, stage: str = "joint") -> Path:
    import torch

    folder.mkdir(parents=True)
    torch.save({"weights": {"dit": {}}, "config": {"stage": stage, "preset": preset}}, folder / "state.pt")
    (folder / "meta.json").write_text(json.dumps({"stage": stage, "preset": preset, "step": 1}))
    return folder


def test_train_on_a_curated_run_without_latents_says_run_latents_first(tmp_path: Path) -> None:
    out = _fake_run(tmp_path / "out")  # its shards/ hold clips: no raw pyarrow schema error
    code, output = _invoke("train", "prior", "--data", str(out), "-o", str(tmp_path / "run"))
    assert code != 0
    assert _one_error_line(output) == f"Error: {out} has no latents: run `javis latents {out}` first"


def test_train_prior_without_negatives_says_run_augment_first(tmp_path: Path) -> None:
    out = _fake_latents(_fake_run(tmp_path / "out"), "tiny", ["positive", "positive"])
    code, output = _invoke("train", "prior", "--data", str(out), "-o", str(tmp_path / "run"))
    line = _one_error_line(output)
    assert code != 0 and f"`javis augment {out}`" in line and f"`javis latents {out}`" in line


def test_train_on_latents_of_another_preset_says_so(tmp_path: Path) -> None:
    out = _fake_latents(_fake_run(tmp_path / "out"), "paper", ["positive"])
    code, output = _invoke("train", "video", "--data", str(out), "-o", str(tmp_path / "run"), "--preset", "tiny")
    line = _one_error_line(output)
    assert code != 0 and "made for preset paper, --preset tiny given" in line


def test_train_from_a_checkpoint_of_another_preset_says_so(tmp_path: Path) -> None:
    out = _fake_latents(_fake_run(tmp_path / "out"), "tiny", ["positive"])
    video = _fake_checkpoint(tmp_path / "video" / "checkpoint_00000001", "paper", stage="video")
    code, output = _invoke("train", "audio", "--data", str(out), "-o", str(tmp_path / "run"), "--init-from", str(video))
    line = _one_error_line(output)
    assert code != 0 and line.endswith("was trained with preset paper, --preset tiny given")


def test_sample_with_a_checkpoint_of_another_preset_says_so(tmp_path: Path) -> None:
    joint = _fake_checkpoint(tmp_path / "joint", "paper")
    args = ["sample", "--checkpoint", str(joint), "--prompt", "rain", "-o", str(tmp_path / "a.mp4")]
    code, output = _invoke(*args, "--preset", "tiny")
    assert code != 0
    assert _one_error_line(output) == f"Error: checkpoint {joint} was trained with preset paper, --preset tiny given"
    prior = _fake_checkpoint(tmp_path / "prior", "tiny", stage="prior")
    code, output = _invoke(*args, "--prior-checkpoint", str(prior))
    assert code != 0 and "was trained with preset tiny, the checkpoint with paper" in _one_error_line(output)
    assert not (tmp_path / "a.mp4").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["latents", "{empty}"],
        ["augment", "{empty}"],
        ["refilter", "{empty}", "--set", "motion.min_flow=0.1"],
        ["refilter", "{empty}", "--set", "motion.min_flow=0.1", "--dry-run"],
    ],
)
def test_commands_on_a_folder_with_no_run_say_run_first(args: list[str], tmp_path: Path, no_ray: None) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = _invoke(*[a.format(empty=empty) for a in args])
    assert code != 0
    expected = f"Error: {empty} has no curated run (no manifest.json): run `javis run -i INPUT -o {empty}` first"
    assert _one_error_line(output) == expected
    assert list(empty.iterdir()) == []  # nothing written


def test_augment_on_a_run_with_no_accepted_clip_says_so(tmp_path: Path, no_ray: None) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    code, output = _invoke("augment", str(out))
    assert code != 0 and "has no accepted clips: nothing to augment" in _one_error_line(output)


def test_easy_negatives_without_a_model_path_is_one_line(tmp_path: Path, no_ray: None) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    code, output = _invoke("augment", str(out), "--set", "easy.enabled=true")
    assert code != 0 and "augment.easy.enabled needs augment.easy.model_path" in _one_error_line(output)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "video", "--data", "{empty}", "-o", "{tmp}/run", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "video", "--data", "{empty}", "-o", "{tmp}/run", "--steps", "0"], "must be positive"),
        (["sample", "--checkpoint", "{empty}", "--prompt", "x", "-o", "{tmp}/x.mp4"], "neither a checkpoint"),
        (
            ["sample", "--checkpoint", "{empty}", "--prompt", "x", "-o", "{tmp}/x.mp4", "--resolution", "4x"],
            "--resolution must be HxW",
        ),
        (["params", "dit", "--preset", "huge"], "unknown preset 'huge'"),
        (["sample", "--checkpoint", "{joint}", "--prompt", "x", "-o", "{tmp}/x.mp4", "--device", "gpu0"], "--device"),
        (["audit", "{empty}"], "has no ledger"),
        (["report", "{empty}"], "has no manifest.json"),
    ],
)
def test_obvious_mistakes_give_one_line(args: list[str], expected: str, tmp_path: Path, no_ray: None) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    joint = _fake_checkpoint(tmp_path / "joint", "tiny")
    code, output = _invoke(*[a.format(empty=empty, tmp=tmp_path, joint=joint) for a in args])
    assert code != 0 and expected in _one_error_line(output)


def test_model_commands_show_the_traceback_only_with_verbose(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "video", "--data", str(tmp_path), "-o", str(tmp_path / "r"), "-v"])
    assert result.exit_code != 0 and "Traceback" in result.output and "has no latents" in result.output
