import shutil

import cv2
import numpy as np
import pytest

from schemas import Col
from stages.decode import DecodedClip, decode_clip
from stages.ocr import (
    BACKENDS,
    Ocr,
    OcrConfig,
    clip_scores,
    decide,
    text_area_fraction,
    wheel_det_model,
)

pytest.importorskip("rapidocr")
pytest.importorskip("onnxruntime")

TITLE_LINES = ["THE GREAT OUTDOORS", "a film by Jane Doe", "music by John Roe", "produced by Acme Films",
               "written by A. Writer", "edited by B. Editor", "in association with Nobody"]  # fmt: skip


@pytest.fixture(scope="module")
def stage():
    return Ocr(OcrConfig())


def _natural_background(height=360, width=640, seed=0) -> np.ndarray:
    """A textured frame without text: 1/f noise (the power spectrum of natural images) over a
    colour gradient. (DB detectors fire on some smoother patterns: see the false-positive test.)"""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = np.inf
    noise = np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f, s=(height, width))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = np.stack([xx / width * 120 + 40, yy / height * 100 + 60, (1 - xx / width) * 80 + 70], -1)
    return np.clip(gradient + 40 * (noise / noise.std())[..., None], 0, 255).astype(np.uint8)


def _write(img: np.ndarray, lines: list[str], top: int, left: int = 40, scale: float = 0.8) -> np.ndarray:
    """White text with a black outline, like burned-in subtitles and credits."""
    img = img.copy()
    for n, line in enumerate(lines):
        org = (left, top + int(n * 46 * scale))
        cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def _row(frames: list[np.ndarray]) -> dict:
    clip = DecodedClip(3.0, {"ocr": np.stack(frames)}, {"ocr": np.arange(len(frames), dtype=float)}, None)
    return {Col.DECODED: clip.to_bytes()}


def test_union_area_counts_overlaps_once():
    box = np.array([[[0, 0], [49, 0], [49, 9], [0, 9]]], np.float32)  # 50 x 10 pixels
    assert text_area_fraction(box, 100, 100) == pytest.approx(0.05)
    assert text_area_fraction(np.concatenate([box, box]), 100, 100) == pytest.approx(0.05)
    assert text_area_fraction(np.zeros((0, 4, 2)), 10, 10) == 0.0


def test_clip_scores_take_the_worst_frame():
    box = np.array([[0, 0], [49, 0], [49, 9], [0, 9]], np.float32)
    big = np.array([[0, 0], [99, 0], [99, 49], [0, 49]], np.float32)
    frames = [np.stack([box, box + [0, 20], box + [0, 40]]), np.stack([big]), np.zeros((0, 4, 2))]
    assert clip_scores(frames, (100, 100)) == (3, pytest.approx(0.5))


def test_subtitle_line_is_found_and_passes(stage):
    clean = _natural_background(seed=1)
    subtitle = _write(clean, ["I told you we should have left before the rain."], top=330)
    out = stage.process(_row([clean, subtitle, subtitle]))
    assert out.rejection is None
    assert out.columns[Col.OCR_NUM_REGIONS] == 1
    assert 0.02 < out.columns[Col.OCR_TEXT_AREA_FRACTION] < 0.08  # one line of ~560 x 25 px, box grown by DB
    assert out.columns[Col.OCR_BACKEND].startswith("rapidocr_det/")


def test_title_card_is_too_much_text(stage):
    card = _write(_natural_background(seed=2), TITLE_LINES, top=40, left=120)
    out = stage.process(_row([_natural_background(seed=3), card]))
    assert out.rejection.reason == "too_much_text"
    assert out.columns[Col.OCR_NUM_REGIONS] == 7  # one region per line
    assert (out.rejection.metric, out.rejection.value, out.rejection.threshold) == (Col.OCR_NUM_REGIONS, 7, 5)


def test_natural_texture_without_text_has_no_regions(stage):
    frames = np.stack([_natural_background(seed=s) for s in range(4)])
    assert [len(stage.detector.detect(f)) for f in frames] == [0, 0, 0, 0]


def test_known_false_positive_a_smooth_colour_blend_is_one_frame_sized_region(stage):
    # the model reports one box over the whole frame on some smooth colour fields (and on dense
    # foliage in Big Buck Bunny): one region, far below the count rule, but a large "text area"
    yy, xx = np.mgrid[0:360, 0:640].astype(np.float32)
    t = ((xx / 640 + yy / 360) / 2)[..., None]
    blend = (np.array([150, 30, 150]) * (1 - t) + np.array([240, 30, 60]) * t).astype(np.uint8)
    out = stage.process(_row([blend]))
    assert out.rejection is None
    assert out.columns[Col.OCR_NUM_REGIONS] == 1 and out.columns[Col.OCR_TEXT_AREA_FRACTION] > 0.9


def test_same_boxes_as_rapidocr_itself(stage):
    from rapidocr import RapidOCR

    params = {"Global.use_cls": False, "Global.use_rec": False, "Global.log_level": "error"}
    params.update({"Det.model_path": str(wheel_det_model()), "Det.limit_type": "max", "Det.limit_side_len": 960})
    frame = _write(_natural_background(seed=2), TITLE_LINES[:3], top=60)
    theirs = RapidOCR(params=params)(np.ascontiguousarray(frame[..., ::-1]), use_det=True, use_cls=False, use_rec=False)
    ours = stage.detector.detect(frame)
    assert len(ours) == 3
    assert sorted(ours.reshape(3, -1).tolist()) == sorted(np.asarray(theirs.boxes).reshape(3, -1).tolist())


def test_decide_from_stored_scores():
    scores = {Col.OCR_NUM_REGIONS: 6, Col.OCR_TEXT_AREA_FRACTION: 0.1}
    assert decide(OcrConfig(), scores).reason == "too_much_text"
    assert decide(OcrConfig(max_regions=6), scores) is None
    by_area = decide(OcrConfig(max_regions=10, max_text_area_fraction=0.05), scores)
    assert (by_area.reason, by_area.metric, by_area.value, by_area.threshold) == (
        "too_much_text", Col.OCR_TEXT_AREA_FRACTION, 0.1, 0.05)  # fmt: skip
    with pytest.raises(ValueError, match="never scored"):
        decide(OcrConfig(), {Col.OCR_NUM_REGIONS: None, Col.OCR_TEXT_AREA_FRACTION: None})


@pytest.mark.parametrize(
    "bad",
    [{"backend": "tesseract"}, {"positions": ()}, {"positions": (1.5,)}, {"max_side": 10}, {"max_regions": -1},
     {"max_text_area_fraction": 0}, {"box_thresh": 1.0}, {"device": "gpu0"}, {"num_threads": -1}],
)  # fmt: skip
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError, match="ocr"):
        OcrConfig(**bad)


def test_frame_need_and_audio():
    need = Ocr.frame_need(OcrConfig(positions=(0.8, 0.2), max_side=640))
    assert (need.name, need.positions, need.max_side, need.gray) == ("ocr", (0.2, 0.8), 640, False)
    assert Ocr.frame_need(OcrConfig(enabled=False)) is None and not Ocr.needs_audio(OcrConfig())


def test_custom_model_path_and_fail_fast(tmp_path, stage):
    copy = tmp_path / "my_dbnet.onnx"
    shutil.copy(wheel_det_model(), copy)
    custom = Ocr(OcrConfig(det_model_path=str(copy)))
    assert custom.backend_id.startswith("rapidocr_det/") and "/my_dbnet.onnx/sha256:090f04ab" in custom.backend_id
    frame = _write(_natural_background(), ["HELLO WORLD"], top=180)
    assert custom.score(frame[None]) == {**stage.score(frame[None]), Col.OCR_BACKEND: custom.backend_id}
    with pytest.raises(FileNotFoundError, match="ocr.det_model_path"):
        Ocr(OcrConfig(det_model_path=str(tmp_path / "missing.onnx")))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="ocr.det_model_path"):
        Ocr(OcrConfig(det_model_path=str(tmp_path / "junk.onnx")))


def test_cuda_backend_fails_fast_without_cuda():
    import onnxruntime

    if BACKENDS["rapidocr_det_cuda"] in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        Ocr(OcrConfig(backend="rapidocr_det_cuda"))


@pytest.mark.gpu
def test_cuda_backend_finds_the_same_text(stage):
    import onnxruntime

    if BACKENDS["rapidocr_det_cuda"] not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu on a CUDA machine")
    cuda = Ocr(OcrConfig(backend="rapidocr_det_cuda", device="cuda:0"))
    assert cuda.detector.session.get_providers()[0] == "CUDAExecutionProvider"
    card = _write(_natural_background(seed=2), TITLE_LINES, top=40, left=120)
    assert cuda.score(card[None])[Col.OCR_NUM_REGIONS] == stage.score(card[None])[Col.OCR_NUM_REGIONS] == 7


def test_generated_video_through_the_shared_decode(tmp_path, stage):
    import av

    path = tmp_path / "subtitled.mp4"
    with av.open(str(path), "w") as container:  # 2 s: a subtitle in the second half only
        video = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        for i in range(20):
            img = _natural_background(seed=4)
            img = _write(img, ["Where did everybody go?"], top=330) if i >= 10 else img
            container.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(video.encode(None))
    decoded = decode_clip(str(path), [Ocr.frame_need(OcrConfig(positions=(0.25, 0.75)))], False, 2.0)
    assert decoded.frames["ocr"].shape == (2, 360, 640, 3)
    assert [len(stage.detector.detect(f)) for f in decoded.frames["ocr"]] == [0, 1]
    assert stage.process({Col.DECODED: decoded.to_bytes()}).columns[Col.OCR_NUM_REGIONS] == 1


@pytest.mark.media
def test_big_buck_bunny_title_cards_are_found(media_dir, stage):
    # 21.5 s: "THE PEACH OPEN MOVIE PROJECT" / "PRESENTS" (two lines); 27 s: the "Big Buck BUNNY"
    # title (one block); 12 s: the meadow, no text
    path = str(media_dir / "mp_big_buck_bunny_0_30.webm")
    need = Ocr.frame_need(OcrConfig(positions=(21.5 / 30, 12 / 30, 27 / 30)))  # sorted by the config
    frames = decode_clip(path, [need], False, 30.0).frames["ocr"]
    meadow, presents, title = (stage.score(f[None]) for f in frames)
    assert presents[Col.OCR_NUM_REGIONS] == 2 and presents[Col.OCR_TEXT_AREA_FRACTION] < 0.06
    assert title[Col.OCR_NUM_REGIONS] == 1 and 0.2 < title[Col.OCR_TEXT_AREA_FRACTION] < 0.4
    assert meadow[Col.OCR_NUM_REGIONS] == 0


@pytest.mark.media
def test_real_footage_watermark_is_found_and_the_scene_above_it_is_clean(media_dir, stage):
    # psd_testvideo carries a one-line copyright watermark at the bottom of every frame
    nature = decode_clip(str(media_dir / "psd_testvideo.mp4"), [Ocr.frame_need(OcrConfig())], False, 24.0)
    frames = nature.frames["ocr"]
    assert stage.score(frames)[Col.OCR_NUM_REGIONS] == 2  # "Copyright (c) 2013 Brandon Castellano", the URL
    above = np.ascontiguousarray(frames[:, : int(frames.shape[1] * 0.78)])
    assert stage.score(above)[Col.OCR_NUM_REGIONS] == 0
