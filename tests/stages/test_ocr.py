import shutil

import cv2
import numpy as np
import pytest

from schemas import Col
from stages.decode import DecodedClip, decode_clip
from stages.ocr import Ocr, OcrConfig, RapidOcrTextDetector, _wheel_det_model, decide, text_area_fraction


@pytest.fixture(scope="module")
def stage():
    return Ocr(OcrConfig())


def _background(height=360, width=640, seed=0) -> np.ndarray:
    """A textured frame without text: colour waves plus light grain."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = [127 + 90 * np.sin(xx / (31 + 7 * c) + yy / (47 - 5 * c) + c + 0.7 * seed * (c + 1)) for c in range(3)]
    grain = np.random.RandomState(seed).normal(0, 4, (height, width, 3))
    return np.clip(np.stack(waves, -1) + grain, 0, 255).astype(np.uint8)


def _write(img: np.ndarray, lines: list[str], top: int, scale: float = 1.0) -> np.ndarray:
    img = img.copy()
    for n, line in enumerate(lines):
        org = (40, top + int(n * 42 * scale))
        cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def _row(frames: list[np.ndarray]) -> dict:
    clip = DecodedClip(2.0, {"ocr": np.stack(frames)}, {"ocr": np.arange(len(frames), dtype=float)}, None)
    return {Col.DECODED: clip.to_bytes()}


def test_union_area_counts_overlaps_once():
    box = np.array([[[0, 0], [49, 0], [49, 9], [0, 9]]], np.float32)
    assert text_area_fraction(box, 100, 100) == pytest.approx(0.05, abs=0.01)
    assert text_area_fraction(np.concatenate([box, box]), 100, 100) == text_area_fraction(box, 100, 100)
    assert text_area_fraction(np.zeros((0, 4, 2)), 10, 10) == 0.0


def test_subtitle_line_is_found_and_passes(stage):
    frame = _write(_background(), ["and then we walked down to the river"], top=330, scale=0.8)
    out = stage.process(_row([frame]))
    assert out.rejection is None
    assert out.columns[Col.OCR_NUM_REGIONS] == 1
    assert 0.01 < out.columns[Col.OCR_TEXT_AREA_FRACTION] < 0.15  # one line at the bottom
    assert out.columns[Col.OCR_BACKEND].startswith("rapidocr_det/")


def test_title_card_is_too_much_text(stage):
    lines = ["CHAPTER ONE", "The river at dawn", "Birds over the water", "A storm is coming",
             "Recorded in the valley", "Sound and picture", "Thanks for watching"]  # fmt: skip
    out = stage.process(_row([_write(_background(), lines, top=40)]))
    assert out.rejection.reason == "too_much_text"
    assert out.rejection.value == out.columns[Col.OCR_NUM_REGIONS] >= 6 and out.rejection.threshold == 5


def test_textured_scene_without_text_stays_far_below_the_threshold(stage):
    # DB detectors fire on some smooth synthetic bands (one region at most here; see
    # docs/filters/ocr.md); real footage without text gets none (test_real_footage_*)
    counts = [stage.process(_row([_background(seed=s)])).columns[Col.OCR_NUM_REGIONS] for s in range(4)]
    assert max(counts) <= 1 and 0 in counts


def test_generated_text_card_sample(stage, samples):
    decoded = decode_clip(str(samples / "text_card.mp4"), [Ocr.frame_need(OcrConfig())], False, 3.0)
    out = stage.process({Col.DECODED: decoded.to_bytes()})
    assert out.rejection.reason == "too_much_text"
    plain = decode_clip(str(samples / "three_scenes.mp4"), [Ocr.frame_need(OcrConfig())], False, 10.0)
    assert stage.process({Col.DECODED: plain.to_bytes()}).columns[Col.OCR_NUM_REGIONS] <= 5


def test_decide_from_stored_scores():
    scores = {Col.OCR_NUM_REGIONS: 6, Col.OCR_TEXT_AREA_FRACTION: 0.1}
    assert decide(OcrConfig(), scores).reason == "too_much_text"
    assert decide(OcrConfig(max_regions=6), scores) is None
    by_area = decide(OcrConfig(max_regions=10, max_text_area_fraction=0.05), scores)
    assert (by_area.metric, by_area.value, by_area.threshold) == (Col.OCR_TEXT_AREA_FRACTION, 0.1, 0.05)
    with pytest.raises(ValueError):
        decide(OcrConfig(), {Col.OCR_NUM_REGIONS: None, Col.OCR_TEXT_AREA_FRACTION: None})


@pytest.mark.parametrize(
    "bad", [{"backend": "tesseract"}, {"positions": ()}, {"positions": (1.5,)}, {"max_text_area_fraction": 0}]
)
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        OcrConfig(**bad)


def test_custom_model_path_and_fail_fast(tmp_path):
    copy = tmp_path / "my_dbnet.onnx"
    shutil.copy(_wheel_det_model(), copy)
    detector = RapidOcrTextDetector(960, 0.5, str(copy), use_cuda=False, device_id=0)
    assert "my_dbnet.onnx" in detector.version
    frame = _write(_background(), ["HELLO WORLD"], top=180)[..., ::-1]
    assert len(detector.detect(np.ascontiguousarray(frame))) == 1
    with pytest.raises(FileNotFoundError, match="ocr.det_model_path"):
        Ocr(OcrConfig(det_model_path=str(tmp_path / "missing.onnx")))


def test_cuda_backend_fails_fast_without_cuda():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        Ocr(OcrConfig(backend="rapidocr_det_cuda"))


@pytest.mark.media
def test_big_buck_bunny_title_text_is_detected(media_dir, stage):
    # the opening title card ("The Peach Open Movie Project presents", about 2-4 s)
    path = str(media_dir / "mp_big_buck_bunny_0_30.webm")
    title = decode_clip(path, [Ocr.frame_need(OcrConfig(positions=(2.5 / 30, 3.5 / 30)))], False, 30.0)
    assert stage.process({Col.DECODED: title.to_bytes()}).columns[Col.OCR_NUM_REGIONS] >= 1
    credits = decode_clip(path, [Ocr.frame_need(OcrConfig(positions=(0.4,)))], False, 30.0)  # the meadow, no text
    assert stage.process({Col.DECODED: credits.to_bytes()}).columns[Col.OCR_NUM_REGIONS] == 0


@pytest.mark.media
def test_real_footage_watermark_is_found_and_the_scene_above_it_is_clean(media_dir, stage):
    # psd_testvideo carries a one-line copyright watermark at the bottom of every frame
    nature = decode_clip(str(media_dir / "psd_testvideo.mp4"), [Ocr.frame_need(OcrConfig())], False, 24.0)
    frames = nature.frames["ocr"]
    assert stage.score(frames)[Col.OCR_NUM_REGIONS] == 2  # "Copyright (c) 2013 ..." and the URL
    above = np.ascontiguousarray(frames[:, : int(frames.shape[1] * 0.78)])
    assert stage.score(above)[Col.OCR_NUM_REGIONS] == 0
