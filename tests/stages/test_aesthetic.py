import math

import cv2
import numpy as np
import pytest

from schemas import Col
from stages.aesthetic import (
    COLOUR_WEIGHT,
    COLOURFULNESS_FULL,
    SUB_SCORE_COLUMNS,
    Aesthetic,
    AestheticConfig,
    colourfulness,
    decide,
    frame_measures,
    image_quality_score,
    sub_scores,
)
from stages.decode import DecodedClip, decode_clip

IQ = AestheticConfig()  # the CPU backend with its calibrated threshold


def _texture(seed: int = 0, height: int = 288, width: int = 512) -> np.ndarray:
    """A colourful, sharp-edged texture: random colour blocks of 8x8 px."""
    blocks = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.resize(blocks, (width, height), interpolation=cv2.INTER_NEAREST)


def _grey_copy(frame: np.ndarray) -> np.ndarray:
    luma = np.rint(frame @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=-1)


def _row(*frames: np.ndarray) -> dict:
    stack = np.stack(frames) if frames else np.zeros((0, 0, 0), np.uint8)
    clip = DecodedClip(2.0, {"aesthetic": stack}, {"aesthetic": np.arange(len(frames), dtype=float)}, None)
    return {Col.DECODED: clip.to_bytes()}


# --- image-quality maths ---------------------------------------------------------------------


def test_colourfulness_known_answers():
    assert colourfulness(np.full((8, 8, 3), 77.0)) == 0.0
    red = np.zeros((8, 8, 3))
    red[..., 0] = 255.0  # rg = 255, yb = 127.5, no spread: only the 0.3 * mean term
    assert colourfulness(red) == pytest.approx(0.3 * math.hypot(255.0, 127.5))


def test_measures_of_flat_and_two_tone_frames():
    flat = frame_measures(np.full((288, 512, 3), 128, np.uint8))
    assert flat.laplacian_var == 0.0 and flat.clipped_fraction == 0.0 and flat.colourfulness == 0.0
    assert flat.std_luma == pytest.approx(0.0, abs=1e-9)
    assert flat.mean_luma == pytest.approx(128 / 255)
    two_tone = np.zeros((256, 256, 3), np.uint8)
    two_tone[:, 128:] = 255
    m = frame_measures(two_tone)
    assert m.std_luma == pytest.approx(0.5) and m.mean_luma == pytest.approx(0.5) and m.clipped_fraction == 1.0


def test_measures_do_not_depend_on_resolution():
    small, large = _texture(3), cv2.resize(_texture(3), (1024, 576), interpolation=cv2.INTER_NEAREST)
    assert image_quality_score(large) == pytest.approx(image_quality_score(small), abs=0.05)


def test_sharp_texture_scores_higher_than_its_blurred_copy():
    sharp = _texture()
    soft = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    heavy = cv2.GaussianBlur(sharp, (0, 0), 8)
    scores = [image_quality_score(f) for f in (sharp, soft, heavy)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] >= IQ.min_image_quality > scores[2]
    assert sub_scores(frame_measures(heavy))["sharpness"] == 0.0


def test_colourful_frame_beats_its_grey_copy_by_the_colour_weight():
    colourful, grey = _texture(1), _grey_copy(_texture(1))
    colour = sub_scores(frame_measures(colourful))["colour"]
    assert colour == pytest.approx(min(1.0, colourfulness(colourful.astype(float)) / COLOURFULNESS_FULL), rel=0.3)
    ratio = image_quality_score(colourful) / image_quality_score(grey)
    # same luma, so the same sharpness, exposure and contrast: only the colour factor differs
    assert ratio == pytest.approx((1 - COLOUR_WEIGHT + COLOUR_WEIGHT * colour) / (1 - COLOUR_WEIGHT), rel=0.02)
    assert ratio > 1.1


# --- the stage on the CPU backend -----------------------------------------------------------------


def test_good_frames_pass_and_fill_only_the_image_quality_columns():
    stage = Aesthetic(IQ)
    outcome = stage.process(_row(_texture(0), _texture(1), _texture(2)))
    assert outcome.rejection is None
    cols = outcome.columns
    assert cols[Col.AESTHETIC_BACKEND] == stage.backend_id and stage.backend_id.startswith("image_quality/v")
    assert 0 <= cols[Col.AESTHETIC_IQ_MIN] <= cols[Col.AESTHETIC_IQ_MEAN] <= 10
    assert cols[Col.AESTHETIC_LAION_MEAN] is None and cols[Col.AESTHETIC_LAION_MIN] is None
    assert set(cols) == set(Aesthetic.produces)
    assert all(0.0 <= cols[c] <= 1.0 for c in SUB_SCORE_COLUMNS.values())


@pytest.mark.parametrize(
    "frame", [_texture(5), cv2.GaussianBlur(_texture(6), (0, 0), 2), np.zeros((288, 512, 3), np.uint8)]
)
def test_stored_sub_scores_explain_the_score(frame):
    """One frame: the stored sub-scores recombine to the stored score by the documented formula."""
    cols = Aesthetic(IQ).process(_row(frame)).columns
    parts = {key: cols[col] for key, col in SUB_SCORE_COLUMNS.items()}
    assert all(0.0 <= v <= 1.0 for v in parts.values())
    assert parts == pytest.approx(sub_scores(frame_measures(frame)))
    recombined = 10 * (parts["sharpness"] * parts["exposure"] * parts["contrast"]) ** (1 / 3)
    recombined *= 1 - COLOUR_WEIGHT + COLOUR_WEIGHT * parts["colour"]
    assert recombined == pytest.approx(cols[Col.AESTHETIC_IQ_MEAN], abs=1e-9)
    # several frames: each column is the mean of the frames' sub-scores
    two = Aesthetic(IQ).process(_row(frame, _texture(7))).columns
    other = sub_scores(frame_measures(_texture(7)))
    for key, col in SUB_SCORE_COLUMNS.items():
        assert two[col] == pytest.approx((parts[key] + other[key]) / 2)


def test_sub_score_columns_are_components_of_the_iq_score():
    from schemas import WORK_SCHEMA, component_columns

    components = component_columns(WORK_SCHEMA)
    assert {c: components[c] for c in SUB_SCORE_COLUMNS.values()} == dict.fromkeys(
        SUB_SCORE_COLUMNS.values(), Col.AESTHETIC_IQ_MEAN
    )


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((288, 512, 3), np.uint8),  # black
        np.full((288, 512, 3), 128, np.uint8),  # flat grey
        cv2.GaussianBlur(_texture(4), (0, 0), 8),  # heavily blurred
    ],
    ids=["black", "flat_grey", "heavy_blur"],
)
def test_low_image_quality(frame):
    outcome = Aesthetic(IQ).process(_row(frame, frame))
    r = outcome.rejection
    assert r.reason == "low_image_quality" and r.metric == Col.AESTHETIC_IQ_MEAN
    assert r.value == outcome.columns[Col.AESTHETIC_IQ_MEAN] < r.threshold == IQ.min_image_quality


def test_no_frames():
    outcome = Aesthetic(IQ).process(_row())
    assert outcome.rejection.reason == "no_frames"
    assert outcome.columns[Col.AESTHETIC_IQ_MEAN] is None and outcome.columns[Col.AESTHETIC_BACKEND]


def test_under_apply_stage_the_ledger_records_the_decision_and_keeps_scores():
    from schemas import Kind, conform
    from stages.base import apply_stage, source_row

    def clip(clip_id: str, frame: np.ndarray) -> dict:
        return {**source_row(id=clip_id, input="x"), Col.KIND: Kind.CLIP, **_row(frame)}

    stage = Aesthetic(IQ)
    table = apply_stage(stage, conform([clip("good", _texture()), clip("black", np.zeros((64, 64, 3), np.uint8))]), "h")
    out = {r[Col.ID]: r for r in table.to_pylist()}
    assert out["good"][Col.STATE] == "pending" and out["good"][Col.AESTHETIC_IQ_MEAN] > IQ.min_image_quality
    black = out["black"]
    assert (black[Col.STATE], black[Col.STAGE], black[Col.REASON]) == ("rejected", "aesthetic", "low_image_quality")
    assert black[Col.BACKEND] == black[Col.AESTHETIC_BACKEND] == stage.backend_id
    assert black[Col.AESTHETIC_IQ_MEAN] == 0.0 and black[Col.AESTHETIC_LAION_MEAN] is None


def test_frames_missing_from_the_decode_is_an_error_not_a_rejection():
    clip = DecodedClip(2.0, {}, {}, None)
    with pytest.raises(ValueError, match="frame_need"):
        Aesthetic(IQ).process({Col.DECODED: clip.to_bytes()})


def test_frame_need_and_audio():
    need = Aesthetic.frame_need(AestheticConfig(positions=[0.2, 0.8], max_side=384))
    assert (need.name, need.positions, need.max_side, need.gray) == ("aesthetic", (0.2, 0.8), 384, False)
    assert Aesthetic.frame_need(AestheticConfig(enabled=False)) is None
    assert Aesthetic.needs_audio(IQ) is False


# --- decide() ------------------------------------------------------------------------------------


def test_decide_image_quality():
    config = AestheticConfig(min_image_quality=3.0)
    assert decide(config, {Col.AESTHETIC_IQ_MEAN: 3.0, Col.AESTHETIC_IQ_MIN: 0.5}) is None
    r = decide(config, {Col.AESTHETIC_IQ_MEAN: 2.9, Col.AESTHETIC_IQ_MIN: 0.5})
    assert (r.reason, r.metric, r.value, r.threshold) == ("low_image_quality", Col.AESTHETIC_IQ_MEAN, 2.9, 3.0)
    assert r.detail == "mean 2.90 < 3.0 over the sampled frames (worst frame 0.50)"
    assert decide(AestheticConfig(min_image_quality=2.0), {Col.AESTHETIC_IQ_MEAN: 2.9}) is None


def test_decide_laion():
    config = AestheticConfig(backend="laion", clip_model_dir="c", mlp_weights="m")  # decide never loads models
    assert decide(config, {Col.AESTHETIC_LAION_MEAN: 4.5}) is None
    r = decide(config, {Col.AESTHETIC_LAION_MEAN: 4.4, Col.AESTHETIC_LAION_MIN: 3.0})
    assert (r.reason, r.metric, r.value, r.threshold) == ("low_aesthetic", Col.AESTHETIC_LAION_MEAN, 4.4, 4.5)


def test_decide_no_frames_and_wrong_backend():
    assert decide(IQ, {Col.AESTHETIC_IQ_MEAN: None, Col.AESTHETIC_LAION_MEAN: None}).reason == "no_frames"
    with pytest.raises(ValueError, match="another aesthetic backend"):
        decide(IQ, {Col.AESTHETIC_LAION_MEAN: 6.0, Col.AESTHETIC_BACKEND: "laion-mlp/sha256:00"})


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"backend": "clip"}, "backend"),
        ({"positions": ()}, "positions"),
        ({"positions": (0.5, 1.5)}, "positions"),
        ({"max_side": 128}, "max_side"),
        ({"min_image_quality": 11}, "min_image_quality"),
        ({"min_laion_score": -1}, "min_laion_score"),
        ({"backend": "laion", "mlp_weights": "m"}, "clip_model_dir"),
        ({"backend": "laion", "clip_model_dir": "c"}, "mlp_weights"),
        ({"device": ""}, "device"),
    ],
)
def test_config_validation(kwargs, key):
    with pytest.raises(ValueError, match=f"aesthetic.{key}"):
        AestheticConfig(**kwargs)


# --- the LAION backend, on a tiny random CLIP and a random head --------------------------------------


def _head_state(torch, input_size: int = 768, seed: int = 0) -> dict:
    """A random MLP in the public .pth's key layout (written out, not built with our code)."""
    g = torch.Generator().manual_seed(seed)
    sizes = {0: (1024, input_size), 2: (128, 1024), 4: (64, 128), 6: (16, 64), 7: (1, 16)}
    state = {}
    for index, (out_size, in_size) in sizes.items():
        state[f"layers.{index}.weight"] = torch.randn(out_size, in_size, generator=g) / math.sqrt(in_size)
        state[f"layers.{index}.bias"] = torch.randn(out_size, generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def tiny_laion(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("laion")
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=768,
    )  # fmt: skip
    clip_dir = folder / "tiny-clip"
    transformers.CLIPVisionModelWithProjection(vision).save_pretrained(clip_dir)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        clip_dir
    )
    torch.save(_head_state(torch), folder / "head.pth")
    constant = _head_state(torch)
    constant["layers.7.weight"].zero_()
    constant["layers.7.bias"].fill_(5.0)  # every frame scores exactly 5.0
    torch.save(constant, folder / "constant_head.pth")
    return folder


def _laion_config(folder, head: str = "head.pth", clip_dir=None, **kwargs) -> AestheticConfig:
    clip_dir = folder / "tiny-clip" if clip_dir is None else clip_dir
    return AestheticConfig(
        backend="laion", clip_model_dir=str(clip_dir), mlp_weights=str(folder / head), device="cpu", **kwargs
    )


def test_laion_scores_a_batch_in_one_pass_as_the_reference_computes(tiny_laion):
    import torch

    stage = Aesthetic(_laion_config(tiny_laion))
    frames = np.stack([_texture(0), _texture(1), np.zeros((288, 512, 3), np.uint8)])
    calls = []
    hook = stage.backend.model.register_forward_hook(lambda *_: calls.append(1))
    scores = stage.backend.score(frames)
    hook.remove()
    assert calls == [1] and scores.shape == (3,) and np.isfinite(scores).all()
    # the reference: image embedding, L2-normalised, through the five linear layers (no dropout at eval)
    pixels = stage.backend.processor(images=list(frames), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        x = stage.backend.model(pixel_values=pixels).image_embeds
        x = x / x.norm(dim=-1, keepdim=True)
        state = torch.load(tiny_laion / "head.pth")
        for index in (0, 2, 4, 6, 7):
            x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    np.testing.assert_allclose(scores, x.squeeze(-1).numpy(), rtol=1e-4, atol=1e-5)
    assert stage.backend.score(frames[:1]) == pytest.approx(scores[:1], abs=1e-5)


def test_laion_stage_columns_and_low_aesthetic(tiny_laion):
    import hashlib

    row = _row(_texture(0), _texture(1))
    outcome = Aesthetic(_laion_config(tiny_laion, head="constant_head.pth")).process(row)
    assert outcome.rejection is None
    assert outcome.columns[Col.AESTHETIC_LAION_MEAN] == pytest.approx(5.0)
    assert outcome.columns[Col.AESTHETIC_LAION_MIN] == pytest.approx(5.0)
    assert outcome.columns[Col.AESTHETIC_IQ_MEAN] is None and outcome.columns[Col.AESTHETIC_IQ_MIN] is None
    assert all(outcome.columns[c] is None for c in SUB_SCORE_COLUMNS.values())  # a learned head has no parts
    sha = hashlib.sha256((tiny_laion / "constant_head.pth").read_bytes()).hexdigest()[:8]
    assert outcome.columns[Col.AESTHETIC_BACKEND] == f"laion-mlp/sha256:{sha}+clip/tiny-clip"
    strict = Aesthetic(_laion_config(tiny_laion, head="constant_head.pth", min_laion_score=6.0))
    r = strict.process(row).rejection
    assert (r.reason, r.metric, r.threshold) == ("low_aesthetic", Col.AESTHETIC_LAION_MEAN, 6.0)
    assert r.value == pytest.approx(5.0)


def test_laion_head_layouts(tiny_laion, tmp_path):
    import torch

    torch.save({"state_dict": _head_state(torch)}, tmp_path / "lightning.ckpt")  # a Lightning checkpoint loads
    assert Aesthetic(_laion_config(tmp_path, "lightning.ckpt", clip_dir=tiny_laion / "tiny-clip")).backend
    torch.save({"fc.weight": torch.zeros(1, 768)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="aesthetic.mlp_weights: .* not a LAION aesthetic MLP"):
        Aesthetic(_laion_config(tmp_path, "other.pth", clip_dir=tiny_laion / "tiny-clip"))
    torch.save(_head_state(torch, input_size=512), tmp_path / "b32.pth")  # a ViT-B/32 head
    with pytest.raises(ValueError, match="aesthetic.mlp_weights expects 512-d"):
        Aesthetic(_laion_config(tmp_path, "b32.pth", clip_dir=tiny_laion / "tiny-clip"))


def test_laion_reads_a_full_clip_model_and_refuses_one_without_projection(tiny_laion, tmp_path):
    import transformers

    vision = transformers.CLIPVisionModelWithProjection.from_pretrained(tiny_laion / "tiny-clip").config
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    full = transformers.CLIPModel(
        transformers.CLIPConfig(text_config=text, vision_config=vision.to_dict(), projection_dim=768)
    )
    processor = transformers.CLIPImageProcessor.from_pretrained(tiny_laion / "tiny-clip")
    for name, model in (("full", full), ("no_projection", full.vision_model)):
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    stage = Aesthetic(_laion_config(tiny_laion, clip_dir=tmp_path / "full"))  # as openai/clip-vit-large-patch14
    assert np.isfinite(stage.backend.score(_texture()[None])).all()
    with pytest.raises(ValueError, match="aesthetic.clip_model_dir: .* lacks CLIP vision weights"):
        Aesthetic(_laion_config(tiny_laion, clip_dir=tmp_path / "no_projection"))


def test_laion_missing_paths_fail_fast_naming_the_key(tiny_laion, tmp_path):
    with pytest.raises(FileNotFoundError, match="aesthetic.clip_model_dir: no such directory"):
        Aesthetic(_laion_config(tiny_laion, clip_dir=tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="aesthetic.clip_model_dir: .* has no config.json"):
        Aesthetic(_laion_config(tiny_laion, clip_dir=tmp_path))
    with pytest.raises(FileNotFoundError, match="aesthetic.mlp_weights: no such file"):
        Aesthetic(_laion_config(tiny_laion, head="missing.pth"))


# --- real media ------------------------------------------------------------------------------------


def _decode(path, config: AestheticConfig) -> dict:
    from stages.probe import ProbeConfig, probe_media

    duration = probe_media(str(path), ProbeConfig(require_audio=False))[Col.PROBE_DURATION_S]
    return {Col.DECODED: decode_clip(str(path), [Aesthetic.frame_need(config)], False, duration).to_bytes()}


@pytest.mark.media
@pytest.mark.parametrize("name", ["psd_testvideo.mp4", "mp_big_buck_bunny_0_30.webm"])
def test_real_footage_passes_and_its_blurred_copy_does_not(media_dir, name):
    stage = Aesthetic(IQ)
    row = _decode(media_dir / name, IQ)
    outcome = stage.process(row)
    assert outcome.rejection is None, outcome.rejection
    assert outcome.columns[Col.AESTHETIC_IQ_MEAN] >= IQ.min_image_quality + 1.0  # a margin, not a coin toss
    frames = DecodedClip.from_row(row).frames["aesthetic"]
    blurred = [cv2.GaussianBlur(f, (0, 0), 8) for f in frames]
    assert stage.process(_row(*blurred)).rejection.reason == "low_image_quality"


@pytest.mark.media
def test_synthetic_fades_are_rejected(media_dir):
    outcome = Aesthetic(IQ).process(_decode(media_dir / "psd_fades.mp4", IQ))
    assert outcome.rejection.reason == "low_image_quality"
