"""The frozen encoders: shapes and strides from the spec, the log-mel, the production loaders'
errors, and the T5 loader on a tiny model saved locally."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from model.encoders import (
    T5TextEncoder,
    TinyRandomAudioVAE,
    TinyRandomPriorTextEncoder,
    TinyRandomT5TextEncoder,
    TinyRandomVideoVAE,
    build_encoders,
    griffin_lim,
    load_audioldm2_audio_vae,
    load_imagebind_text_encoder,
    load_opensora_video_vae,
    load_t5_text_encoder,
    log_mel,
    mel_filterbank,
    num_mel_frames,
)
from model.spec import PAPER, TINY


@pytest.fixture(scope="module")
def tiny():
    return build_encoders("tiny", TINY)


def _frames(seed: int, t: int, h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (1, t, h, w, 3), dtype=np.uint8))


def test_video_vae_strides_and_round_trip_shape(tiny):
    frames = _frames(0, 9, 48, 64)  # 9 frames: padded to 12 in time
    latent = tiny.video.encode(frames)
    assert tuple(latent.shape[1:]) == tiny.video.latent_shape(9, 48, 64) == (4, math.ceil(9 / 4), 6, 8)
    decoded = tiny.video.decode(latent, 9)
    assert decoded.dtype == torch.uint8 and tuple(decoded.shape) == (1, 9, 48, 64, 3)
    with pytest.raises(ValueError, match="multiple of the space stride"):
        tiny.video.encode(_frames(0, 4, 50, 64))


def test_tiny_modules_are_seeded_and_depend_on_their_input(tiny):
    a, b = _frames(1, 8, 48, 64), _frames(2, 8, 48, 64)
    again = TinyRandomVideoVAE(TINY)
    assert torch.equal(tiny.video.encode(a), again.encode(a))
    assert not torch.allclose(tiny.video.encode(a), tiny.video.encode(b))
    mel_a, mel_b = log_mel(torch.randn(1, 16000) * 0.1, TINY), log_mel(torch.randn(1, 16000) * 0.5, TINY)
    assert torch.equal(tiny.audio.encode(mel_a), TinyRandomAudioVAE(TINY).encode(mel_a))
    assert not torch.allclose(tiny.audio.encode(mel_a), tiny.audio.encode(mel_b))


def test_mel_frames_and_audio_latent_shapes(tiny):
    assert num_mel_frames(16_000, TINY) == 100  # one frame per 160-sample hop
    assert num_mel_frames(16_100, TINY) == 104  # 101 frames, rounded up to the VAE's time stride
    mel = log_mel(torch.randn(2, 16_100) * 0.1, TINY)
    assert tuple(mel.shape) == (2, 104, TINY.audio_mel_bins)
    latent = tiny.audio.encode(mel)
    assert tuple(latent.shape[1:]) == tiny.audio.latent_shape(16_100) == (8, 26, 16)
    back = tiny.audio.decode(latent)
    assert back.shape == mel.shape  # mel -> latent -> mel keeps the shape
    wave = tiny.audio.vocode(back)
    assert tuple(wave.shape) == (2, 104 * TINY.audio_mel_hop) and torch.isfinite(wave).all()


def test_log_mel_puts_a_tone_in_its_mel_band():
    t = torch.arange(16_000) / 16_000
    mel = log_mel(torch.sin(2 * math.pi * 1000 * t)[None], TINY)[0]  # (A, 64)
    fb = mel_filterbank(16_000, 1024, 64, 0.0, 8000.0)
    expected = int(np.argmax(fb[:, round(1000 / (16_000 / 1024))]))
    assert abs(int(mel[10:-10].mean(0).argmax()) - expected) <= 1


def test_filterbank_matches_librosa_slaney():
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(16_000, 1024, 64, 0.0, 8000.0)
    theirs = librosa.filters.mel(sr=16_000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_griffin_lim_recovers_the_tone_frequency():
    t = torch.arange(16_000) / 16_000
    wave = griffin_lim(log_mel(torch.sin(2 * math.pi * 440 * t)[None], TINY), TINY)[0].numpy()
    spectrum = np.abs(np.fft.rfft(wave[2000:-2000]))
    peak_hz = np.argmax(spectrum) * 16_000 / len(wave[2000:-2000])
    assert abs(peak_hz - 440) < 40  # mel bands are ~30 Hz wide around 440 Hz


def test_text_encoders_shapes_masks_and_padding(tiny):
    texts = ["a dog barks twice", "rain on a tin roof, then thunder"]
    states, mask = tiny.text.encode(texts)
    assert tuple(states.shape) == (2, TINY.text_len, TINY.text_dim) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [5, 9]  # words and punctuation + the end token
    assert torch.all(states[~mask] == 0)
    prior, prior_mask = tiny.prior_text.encode(texts)
    assert tuple(prior.shape) == (2, TINY.prior_text_len, TINY.prior_text_dim)
    assert prior_mask.sum(1).tolist() == [5, 9]
    assert not torch.allclose(prior[0, :4], prior[1, :4])
    long_states, long_mask = tiny.text.encode(["word " * 100])
    assert long_mask.all()  # truncated to text_len


def test_paper_shapes():
    video = TinyRandomVideoVAE(PAPER)
    assert video.latent_shape(96, 240, 432) == (4, 24, 30, 54)
    assert tuple(video.encode(_frames(0, 8, 16, 16)).shape) == (1, 4, 2, 2, 2)
    assert TinyRandomAudioVAE(PAPER).latent_shape(4 * 16_000) == (8, 100, 16)
    with torch.device("meta"):  # paper widths without allocating them
        prior = TinyRandomPriorTextEncoder(PAPER)
        states, _ = prior.encode(["a dog"])
        t5 = TinyRandomT5TextEncoder(PAPER)
    assert tuple(states.shape) == (1, 77, 1024)
    assert t5.model.config.d_model == 4096 and t5.max_len == 300


@pytest.mark.parametrize(
    ("loader", "key"),
    [(load_t5_text_encoder, "t5"), (load_imagebind_text_encoder, "imagebind"),
     (load_opensora_video_vae, "video_vae"), (load_audioldm2_audio_vae, "audio_vae")],
)  # fmt: skip
def test_missing_production_weights_are_a_clear_error(loader, key, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"never downloaded.*|paths\\[{key!r}\\]"):
        loader(None, PAPER)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        loader(tmp_path / "absent", PAPER)


def test_build_production_without_paths_fails_at_once():
    with pytest.raises(FileNotFoundError, match="T5"):
        build_encoders("production", PAPER, {})
    with pytest.raises(ValueError, match="unknown encoder path keys"):
        build_encoders("production", PAPER, {"vae": "/x"})
    with pytest.raises(ValueError, match="unknown encoders kind"):
        build_encoders("large", PAPER)


@pytest.mark.parametrize(
    ("loader", "package"),
    [(load_imagebind_text_encoder, "imagebind"), (load_opensora_video_vae, "opensora"),
     (load_audioldm2_audio_vae, "diffusers")],
)  # fmt: skip
def test_missing_package_names_what_to_install(loader, package, tmp_path):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")
    with pytest.raises(ImportError, match=f"`{package}`.*pip install"):
        loader(weights, PAPER)


def test_t5_loader_reads_a_local_folder(tmp_path):
    """The production T5 path on a tiny random T5 and a word-level tokenizer saved locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "dog", "barks", "rain", "falls"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tiny = TinyRandomT5TextEncoder(TINY, vocab_size=len(words))
    tiny.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_t5_text_encoder(tmp_path, TINY)
    states, mask = loaded.encode(["a dog barks", "rain falls"])
    assert tuple(states.shape) == (2, TINY.text_len, TINY.text_dim) and mask.sum(1).tolist() == [3, 2]
    # the same weights give the same states
    reference = T5TextEncoder(tiny.model, loaded.tokenize, TINY).encode(["a dog barks", "rain falls"])[0]
    torch.testing.assert_close(states, reference)
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(ValueError, match="text_dim"):
        load_t5_text_encoder(tmp_path, PAPER)


# ---- JavisDiT++: Wan2.1 video VAE, umT5, no prior text --------------------------------------------


@pytest.fixture(scope="module")
def ditpp_tiny():
    from model.spec import DITPP_TINY

    return build_encoders("tiny", DITPP_TINY)


def test_ditpp_spec_picks_wan_vae_umt5_and_no_prior(ditpp_tiny):
    assert ditpp_tiny.describe() == {"text": "TinyRandomUMT5TextEncoder", "prior_text": None,
                                     "video": "TinyRandomWanVideoVAE", "audio": "TinyRandomAudioVAE"}  # fmt: skip
    states, mask = ditpp_tiny.text.encode(["a dog barks", "rain"])
    assert tuple(states.shape) == (2, 16, 32) and mask.sum(1).tolist() == [4, 2]
    assert (states[~mask] == 0).all()


def test_wan_vae_causal_time_shapes_and_normalisation(ditpp_tiny):
    vae = ditpp_tiny.video
    assert vae.latent_shape(25, 64, 48) == (16, 7, 8, 6) and vae.latent_shape(17, 48, 64) == (16, 5, 6, 8)
    assert vae.latent_shape(1, 64, 64)[1] == 1 and vae.latent_shape(4, 64, 64)[1] == 1
    with pytest.raises(ValueError, match="space stride"):
        vae.latent_shape(17, 60, 64)
    frames = _frames(0, 25, 64, 64)
    latents = vae.encode(frames)
    assert tuple(latents.shape) == (1, 16, 7, 8, 8)
    raw = vae.vae.encode(frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1).latent_dist.mode()
    assert torch.allclose(latents * vae.std + vae.mean, raw, atol=1e-5)  # normalised with Wan's mean / std
    decoded = vae.decode(latents, 25)
    assert decoded.dtype == torch.uint8 and tuple(decoded.shape) == (1, 25, 64, 64, 3)
    assert tuple(vae.decode(latents, 27).shape) == (1, 27, 64, 64, 3)  # past the latents: last frame repeated


def test_wan_vae_loader_reads_a_local_folder(ditpp_tiny, tmp_path):
    from model.encoders import load_umt5_text_encoder, load_wan_video_vae
    from model.spec import DITPP_PAPER, DITPP_TINY

    for loader, key in ((load_wan_video_vae, "video_vae"), (load_umt5_text_encoder, "umt5")):
        with pytest.raises(FileNotFoundError, match=f"never downloaded.*|paths\\[{key!r}\\]"):
            loader(tmp_path / "absent", DITPP_PAPER)
    with pytest.raises(FileNotFoundError, match="umT5"):
        build_encoders("production", DITPP_PAPER, {})
    ditpp_tiny.video.vae.save_pretrained(tmp_path / "vae")  # a diffusers Wan2.1 folder layout
    loaded = load_wan_video_vae(tmp_path, DITPP_TINY)
    frames = _frames(1, 5, 16, 16)
    assert torch.equal(loaded.encode(frames), ditpp_tiny.video.encode(frames))
