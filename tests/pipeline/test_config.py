import json

import pytest

from pipeline.config import Config, load_config, parse_override


def test_overrides_are_typed_and_nested():
    assert parse_override("scene_cut.max_clip_s=30") == {"scene_cut": {"max_clip_s": 30}}
    assert parse_override("ray.address=null") == {"ray": {"address": None}}
    assert parse_override("resources.cut.num_cpus=0.5") == {"resources": {"cut": {"num_cpus": 0.5}}}
    config = load_config(
        "default", overrides=["scene_cut.detector=content", "sound.min_mean_dbfs=-50", "resources.cut.batch_size=8"]
    )
    assert config.scene_cut.detector == "content"
    assert config.sound.min_mean_dbfs == -50
    assert config.resources["cut"].batch_size == 8


@pytest.mark.parametrize(
    "override, message",
    [
        ("scene_cut.detectr=content", "unknown keys"),
        ("scene_cut.detector=magic", "detector"),
        ("sound.min_mean_dbfs=10", "min_mean_dbfs"),
        ("cut.clips_dir=../elsewhere", "clips_dir"),
        ("cut.clips_dir=media", "download_dir"),
        ("clip_length.min_clip_s=100", "min_clip_s"),
        ("resources.nosuchstage.num_cpus=1", "unknown stages"),
        ("ingest.date_after=2024-01-01", "YYYYMMDD"),
        ("nodot", "section.key"),
    ],
)
def test_bad_values_fail_before_any_work(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("default", overrides=[override])


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("scene_cut:\n  max_clip_s: 20\nsound:\n  min_mean_dbfs: -55\n")
    config = load_config("demo", path, ["sound.min_mean_dbfs=-45"])
    assert config.scene_cut.max_clip_s == 20 and config.sound.min_mean_dbfs == -45
    assert config.output.shard_max_rows == 4  # from the demo preset


def test_resolved_config_round_trips_through_json_and_hashes_per_stage():
    from pipeline.config import config_from_dict

    config = load_config("default", overrides=["sound.min_mean_dbfs=-50"])
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config.stage_hash("sound") != Config().stage_hash("sound")
    assert config.stage_hash("cut") == Config().stage_hash("cut")


def test_production_backends_on_cuda_get_a_gpu_by_default():
    from pipeline.dag import stage_gpus

    cpu = load_config("default")
    stages = (
        "ingest",
        "probe",
        "scene_cut",
        "clip_length",
        "sound",
        "aesthetic",
        "motion",
        "speech",
        "ocr",
        "cut",
    )
    assert [stage_gpus(s, cpu) for s in stages] == [0] * len(stages)
    gpu = load_config("default", overrides=["ocr.backend=rapidocr_det_cuda", "resources.motion.num_gpus=0.5"])
    assert stage_gpus("ocr", gpu) == 1.0 and stage_gpus("motion", gpu) == 0.5


def test_a_gpu_stage_on_a_machine_without_gpus_fails_fast():
    from pipeline.dag import check_gpus

    config = load_config("default", overrides=["ocr.backend=rapidocr_det_cuda"])
    with pytest.raises(ValueError, match="ocr"):
        check_gpus(config, available_gpus=0, autoscaling=False)
    check_gpus(config, available_gpus=0, autoscaling=True)  # an autoscaler may add GPU nodes
    check_gpus(load_config("default"), available_gpus=0, autoscaling=False)


def test_actor_reservations_are_fitted_so_a_map_task_can_always_run():
    from pipeline.dag import fit_cpus

    llm = [f"{s}.llm.{k}" for s in ("caption_video", "caption_audio", "caption_merge", "taxonomy")
           for k in ("backend=transformers", "model_path=/models/x")]  # fmt: skip
    config = load_config("annotate", overrides=llm)
    fitted = fit_cpus(config, 2.0)
    actors = ["aesthetic", "motion", "speech", "ocr", "caption_video", "caption_audio", "caption_merge", "taxonomy"]
    assert sum(fitted[a] for a in actors) + max(fitted[t] for t in ("cut", "scene_cut")) <= 2.0
    assert fit_cpus(config, None) == {s: config.resources[s].num_cpus for s in fitted}  # a cluster that can grow
    demo = load_config("demo")
    assert fit_cpus(demo, 2.0) == {s: demo.resources[s].num_cpus for s in fit_cpus(demo, None)}  # fits as is


def test_a_config_saved_by_an_earlier_javis_still_loads():
    from pipeline.config import config_from_dict

    saved = Config().to_dict()
    saved["resources"]["decode"] = {"num_cpus": 1.0, "num_gpus": 0.0, "batch_size": 1, "max_concurrency": None}
    assert config_from_dict(saved) == Config()
    with pytest.raises(ValueError, match="unknown stages"):  # a user's own file still gets the clear error
        load_config("default", overrides=["resources.decode.num_cpus=1"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("speech.max_speech_ratio=abc", "--set speech.max_speech_ratio=abc: expected a number (float), got 'abc'"),
        ("speech.max_speech_ratio=true", "expected a number (float), got True"),  # a bool is not a number
        ("resources.cut.batch_size=2.5", "--set resources.cut.batch_size=2.5: expected an integer (int), got 2.5"),
        ("ray.num_cpus=many", "expected an integer (int) or null, got 'many'"),
        ("output.keep_rejected_media=1", "expected true or false (bool), got 1"),
        ("aesthetic.positions=0.5", "expected a list of numbers (float), got 0.5"),
        ("aesthetic.positions=[0.1, x]", "--set aesthetic.positions=[0.1, x]: expected a number (float), got 'x'"),
        ("balance.caps={dog: lots}", "--set balance.caps={dog: lots}: expected an integer (int), got 'lots'"),
        ("caption_video.llm.timeout_s=soon", "expected a number (float), got 'soon'"),
        ("cut.clips_dir=[a, b]", "expected a string (str), got ['a', 'b']"),
    ],
)
def test_values_of_the_wrong_type_name_the_key_and_the_type(override, expected):
    with pytest.raises(ValueError) as e:
        load_config("default", overrides=[override])
    assert expected in str(e.value)


def test_yaml_guesses_are_taken_where_they_fit():
    config = load_config("default", overrides=["speech.max_speech_ratio=1", "ingest.date_after=20240101",
                                               "ray.address=null", "aesthetic.positions=[0.2, 0.8]"])  # fmt: skip
    assert config.speech.max_speech_ratio == 1 and config.ingest.date_after == "20240101"
    assert config.ray.address is None and config.aesthetic.positions == (0.2, 0.8)


def test_a_wrong_type_in_a_config_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("motion:\n  min_flow: fast\n")
    with pytest.raises(ValueError, match=r"c\.yaml: config\.motion\.min_flow: expected a number \(float\), got 'fast'"):
        load_config("default", path)
