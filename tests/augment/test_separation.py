"""augment/separation.py: STFT round trip, activity intervals, HPSS / NMF separation measured on
synthetic signals with known answers, and the AudioSep code path with a tiny random torch model."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import numpy as np
import pytest

from augment.context import Interval
from augment.separation import (
    AudioSepSeparator,
    SeparationConfig,
    active_intervals,
    fft_size,
    hpss_masks,
    istft,
    load_audiosep,
    merge_intervals,
    nmf,
    separate_sources,
    stft,
)

RATE = 16000
# documented edge accuracy: window / 2 + hop = 35 ms; a little more for the hop rounding
TOLERANCE_S = 0.045


def _time(duration_s: float) -> np.ndarray:
    return np.arange(int(duration_s * RATE)) / RATE


def _bursts(duration_s: float, spans: list[tuple[float, float]], rms: float = 0.1, seed: int = 0) -> np.ndarray:
    """(1, S) silence except white noise of the given RMS on each [start, end) span."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((1, int(duration_s * RATE)), np.float32)
    for start, end in spans:
        a, b = int(start * RATE), int(end * RATE)
        audio[0, a:b] = rng.standard_normal(b - a) * rms
    return audio


def _spans(intervals: list[Interval]) -> list[tuple[float, float]]:
    return [(i.start_s, i.end_s) for i in intervals]


def _assert_close_spans(found: list[Interval], truth: list[tuple[float, float]]) -> None:
    assert len(found) == len(truth), _spans(found)
    for interval, (start, end) in zip(found, truth):
        assert abs(interval.start_s - start) <= TOLERANCE_S and abs(interval.end_s - end) <= TOLERANCE_S, _spans(found)


def _energy(x: np.ndarray) -> float:
    return float(np.sum(np.square(x, dtype=np.float64)))


@pytest.mark.parametrize("num_samples", [1, 999, 16000, 16001])
def test_stft_istft_round_trip_is_exact(num_samples):
    audio = np.random.default_rng(1).uniform(-1, 1, (2, num_samples)).astype(np.float32)
    n_fft = fft_size(RATE, 0.064)
    assert n_fft == 1024
    assert np.abs(istft(stft(audio, n_fft), n_fft, num_samples) - audio).max() < 1e-5


def test_intervals_of_a_signal_silent_outside_known_spans():
    truth = [(0.5, 1.2), (2.0, 2.6)]
    found = active_intervals(_bursts(3.0, truth), RATE, SeparationConfig())
    _assert_close_spans(found, truth)
    assert all(type(i.start_s) is float and type(i.end_s) is float for i in found)  # JSON-ready


def test_short_gaps_are_merged_and_short_sounds_dropped():
    audio = _bursts(3.0, [(0.5, 0.8), (0.9, 1.3), (2.0, 2.02)])  # a 0.1 s gap; a 20 ms blip (70 ms seen)
    _assert_close_spans(active_intervals(audio, RATE, SeparationConfig()), [(0.5, 1.3)])
    config = SeparationConfig(min_gap_s=0.0, min_active_s=0.0)
    _assert_close_spans(active_intervals(audio, RATE, config), [(0.5, 0.8), (0.9, 1.3), (2.0, 2.02)])


def test_absolute_threshold_in_dbfs():
    audio = _bursts(2.0, [(0.5, 1.0)], rms=10 ** (-40 / 20))  # -40 dBFS
    _assert_close_spans(active_intervals(audio, RATE, SeparationConfig(activity_mode="absolute")), [(0.5, 1.0)])
    quiet = SeparationConfig(activity_mode="absolute", activity_absolute_dbfs=-30.0)
    assert active_intervals(audio, RATE, quiet) == []


def test_relative_threshold_follows_the_sources_own_peak():
    loud, soft, faint = 10 ** (-20 / 20), 10 ** (-40 / 20), 10 ** (-55 / 20)  # 0, 20 and 35 dB below the peak
    audio = (
        _bursts(3.0, [(0.2, 0.7)], loud) + _bursts(3.0, [(1.0, 1.5)], soft, 1) + _bursts(3.0, [(2.0, 2.5)], faint, 2)
    )
    _assert_close_spans(active_intervals(audio, RATE, SeparationConfig()), [(0.2, 0.7), (1.0, 1.5)])


def test_relative_floor_keeps_near_silence_inactive():
    hiss = _bursts(2.0, [(0.0, 2.0)], rms=1e-5)  # -100 dBFS everywhere: its own peak, but below the floor
    assert active_intervals(hiss, RATE, SeparationConfig()) == []


def test_merge_intervals_is_a_sorted_union():
    merged = merge_intervals([Interval(2.0, 3.0), Interval(0.0, 1.0), Interval(0.5, 1.5), Interval(1.5, 1.8)])
    assert _spans(merged) == [(0.0, 1.8), (2.0, 3.0)]


def _tone_and_clicks(duration_s: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """A sustained 440 Hz tone and 2 ms noise bursts every 0.25 s, of similar energy (3.6 dB apart)."""
    t = _time(duration_s)
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    clicks = np.zeros_like(tone)
    rng = np.random.default_rng(3)
    for start in np.arange(0.1, duration_s, 0.25):
        i = int(start * RATE)
        clicks[i : i + 32] = rng.uniform(-0.9, 0.9, 32)
    return tone, clicks


def test_hpss_puts_the_tone_in_harmonic_and_the_clicks_in_percussive():
    tone, clicks = _tone_and_clicks()
    n_fft = fft_size(RATE, 0.064)
    magnitude = np.abs(stft((tone + clicks)[None], n_fft)[0])
    hop_s, bin_hz = n_fft / 4 / RATE, RATE / n_fft
    harmonic, percussive = hpss_masks(magnitude, round(0.2 / hop_s), round(250 / bin_hz), 2.0)

    def part(signal: np.ndarray, mask: np.ndarray) -> float:  # masks are fixed, so each source's share is linear
        return _energy(istft(stft(signal[None], n_fft) * mask[None], n_fft, len(signal)))

    assert 10 * np.log10(part(tone, harmonic) / part(clicks, harmonic)) > 10
    assert 10 * np.log10(part(clicks, percussive) / part(tone, percussive)) > 10


@pytest.mark.parametrize("backend", ["hpss", "nmf"])
def test_sources_sum_to_the_input_and_keep_its_shape(backend):
    tone, clicks = _tone_and_clicks(2.0)
    audio = np.stack([tone + clicks, 0.5 * tone - clicks]).astype(np.float32)
    before = audio.copy()
    sources, union = separate_sources(audio, RATE, SeparationConfig(backend=backend))
    assert np.array_equal(audio, before)
    assert all(s.audio.shape == audio.shape and s.audio.dtype == np.float32 for s in sources)
    assert np.abs(np.sum([s.audio for s in sources], axis=0) - audio).max() < 1e-4
    assert union == merge_intervals([i for s in sources for i in s.active])


def test_each_source_has_its_own_intervals():
    t = _time(4.0)
    tone = np.where((t >= 0.5) & (t < 1.5), 0.3 * np.sin(2 * np.pi * 440 * t), 0.0)
    clicks = np.zeros_like(t)
    clicks[(np.arange(2.0, 3.0, 0.1) * RATE).astype(int)] = 0.9  # 0.1 s apart: gaps merge into one interval
    sources, union = separate_sources((tone + clicks).astype(np.float32)[None], RATE, SeparationConfig())
    by_name = {s.name: s.active for s in sources}
    _assert_close_spans(by_name["harmonic"], [(0.5, 1.5)])
    # the last click's window ends ~30 ms after it, at 2.93 s
    _assert_close_spans(by_name["percussive"], [(2.0, 2.93)])
    _assert_close_spans(union, [(0.5, 1.5), (2.0, 2.93)])


@pytest.mark.parametrize("divergence", ["euclidean", "kl"])
def test_nmf_reconstructs_a_low_rank_magnitude(divergence):
    rng = np.random.default_rng(4)
    v = rng.uniform(0, 1, (257, 3)) @ rng.uniform(0, 1, (3, 400))  # rank 3, non-negative
    w, h = nmf(v.astype(np.float32), 3, 300, seed=0, divergence=divergence)
    assert w.shape == (257, 3) and h.shape == (3, 400) and w.min() >= 0 and h.min() >= 0
    assert np.linalg.norm(v - w @ h) / np.linalg.norm(v) < 0.05


@pytest.mark.parametrize("divergence", ["euclidean", "kl"])
def test_nmf_components_are_sources_ordered_low_to_high(divergence):
    t = _time(3.0)
    low = np.where(t < 1.0, 0.3 * np.sin(2 * np.pi * 300 * t), 0.0)
    high = np.where(t >= 2.0, 0.3 * np.sin(2 * np.pi * 3000 * t), 0.0)
    audio = (low + high).astype(np.float32)[None]
    config = SeparationConfig(backend="nmf", nmf_components=2, nmf_divergence=divergence)
    sources, _ = separate_sources(audio, RATE, config)
    assert [s.name for s in sources] == ["nmf_0", "nmf_1"]
    _assert_close_spans(sources[0].active, [(0.0, 1.0)])
    _assert_close_spans(sources[1].active, [(2.0, 3.0)])
    # each component carries its own tone: > 20 dB more energy from it than from the other
    assert 10 * np.log10(_energy(sources[0].audio[0, :RATE]) / _energy(sources[0].audio[0, 2 * RATE :])) > 20


def test_nmf_is_deterministic_for_a_seed():
    tone, clicks = _tone_and_clicks(1.0)
    audio = (tone + clicks)[None]
    config = SeparationConfig(backend="nmf")
    first, second = separate_sources(audio, RATE, config)[0], separate_sources(audio, RATE, config)[0]
    assert all(a.audio.tobytes() == b.audio.tobytes() for a, b in zip(first, second))
    magnitude = np.abs(stft(audio, 1024)[0])
    w0, _ = nmf(magnitude, 4, 10, seed=0)
    w1, _ = nmf(magnitude, 4, 10, seed=1)
    assert not np.allclose(w0, w1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"backend": "spleeter"},
        {"activity_mode": "loudness"},
        {"nmf_divergence": "is"},
        {"activity_relative_db": 3.0},
        {"activity_hop_s": 0.1, "activity_window_s": 0.05},
        {"nmf_components": 0},
        {"mask_power": 0.0},
    ],
)
def test_config_rejects_user_mistakes(overrides):
    with pytest.raises(ValueError):
        SeparationConfig(**overrides)


@pytest.mark.parametrize("shape", [(16000,), (1, 0)])
def test_audio_must_be_channels_by_samples(shape):
    with pytest.raises(ValueError):
        separate_sources(np.zeros(shape, np.float32), RATE, SeparationConfig())


# --- AudioSep: the code path with a tiny random model of AudioSep's call signature ---------------

TINY_AUDIOSEP = textwrap.dedent(
    '''
    import torch


    class TinyQueryEncoder(torch.nn.Module):
        """models.clap_encoder.CLAP_Encoder.get_query_embed: text -> (B, 512) embeddings."""

        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(64, 512)

        def get_query_embed(self, modality, audio=None, text=None, use_text_ratio=0.5, device=None):
            assert modality == "text"
            ids = torch.tensor([sum(map(ord, t)) % 64 for t in text], device=device)
            return self.table(ids).float()


    class TinySeparator(torch.nn.Module):
        """ResUNet30.forward: {"mixture": (B, 1, S), "condition": (B, 512)} -> {"waveform": (B, 1, S)};
        here a query-dependent gain, so what comes out is known."""

        def __init__(self):
            super().__init__()
            self.film = torch.nn.Linear(512, 1)
            self.seen = []

        def forward(self, input_dict):
            self.seen.append(tuple(input_dict["mixture"].shape))
            gain = torch.sigmoid(self.film(input_dict["condition"]))  # (B, 1)
            return {"waveform": input_dict["mixture"] * gain[:, :, None]}


    class TinyAudioSep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.query_encoder = TinyQueryEncoder()
            self.ss_model = TinySeparator()

        def gain(self, query):
            with torch.no_grad():
                embed = self.query_encoder.get_query_embed("text", text=[query])
                return float(torch.sigmoid(self.ss_model.film(embed)))
    '''
)


@pytest.fixture
def tiny_audiosep(tmp_path, monkeypatch):
    """A fake AudioSep checkout (its module layout, tiny models) importable for one test only."""
    torch = pytest.importorskip("torch")
    del torch
    repo = tmp_path / "AudioSep"
    (repo / "models").mkdir(parents=True)
    (repo / "config").mkdir()
    (repo / "models" / "__init__.py").write_text("")
    (repo / "models" / "tiny.py").write_text(TINY_AUDIOSEP)
    (repo / "models" / "clap_encoder.py").write_text(
        "class CLAP_Encoder:\n"
        "    def __init__(self, pretrained_path='checkpoint/clap.pt', sampling_rate=32000, amodel='HTSAT-base'):\n"
        "        self.pretrained = pretrained_path\n"
        "    def eval(self):\n"
        "        return self\n"
    )
    (repo / "utils.py").write_text(
        "from models.tiny import TinyAudioSep\n"
        "def parse_yaml(config_yaml):\n"
        "    return {'model': {'model_type': 'ResUNet30'}, 'path': config_yaml}\n"
        "def load_ss_model(configs, checkpoint_path, query_encoder):\n"
        "    model = TinyAudioSep()\n"
        "    model.loaded_with = (configs, checkpoint_path, query_encoder.pretrained)\n"
        "    return model\n"
    )
    (repo / "config" / "audiosep_base.yaml").write_text("model: {}\n")
    (tmp_path / "sep.ckpt").write_bytes(b"x")
    (tmp_path / "clap.pt").write_bytes(b"x")
    clashing = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in ("utils", "models")}
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield SeparationConfig(
        backend="audiosep",
        audiosep_repo=str(repo),
        audiosep_checkpoint=str(tmp_path / "sep.ckpt"),
        audiosep_clap_checkpoint=str(tmp_path / "clap.pt"),
        device="cpu",
    )
    for name in [n for n in sys.modules if n.split(".")[0] in ("utils", "models")]:
        del sys.modules[name]
    sys.modules.update(clashing)


def test_audiosep_loader_builds_from_the_checkout(tiny_audiosep):
    separator = load_audiosep(tiny_audiosep)
    configs, checkpoint, clap_path = separator.model.loaded_with
    assert configs["path"].endswith("config/audiosep_base.yaml")
    assert checkpoint == tiny_audiosep.audiosep_checkpoint
    assert clap_path == tiny_audiosep.audiosep_clap_checkpoint  # absolute, not AudioSep's cwd-relative default
    assert separator.backend_id == "audiosep/sep.ckpt"


def test_audiosep_separates_by_query_at_32khz(tiny_audiosep):
    separator = load_audiosep(tiny_audiosep)
    t = _time(1.0)
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    queries = ["dog barking", "car engine"]
    sources, union = separate_sources(audio, RATE, tiny_audiosep, separator=separator, queries=queries)
    assert [s.name for s in sources] == queries
    assert separator.model.ss_model.seen == [(2, 1, 2 * RATE)] * 2  # channels as the batch, at 32 kHz
    for source, query in zip(sources, queries):
        assert source.audio.shape == audio.shape and source.audio.dtype == np.float32
        interior = slice(RATE // 10, -RATE // 10)  # the resampling filters' edges aside
        expected = separator.model.gain(query) * audio
        assert np.abs(source.audio[:, interior] - expected[:, interior]).max() < 1e-3
        _assert_close_spans(source.active, [(0.0, 1.0)])
    assert separator.model.gain(queries[0]) != pytest.approx(separator.model.gain(queries[1]), abs=1e-3)
    with pytest.raises(ValueError, match="query"):
        separator.separate(audio, RATE, [])


@pytest.mark.parametrize(
    "key, value",
    [
        ("audiosep_repo", None),
        ("audiosep_checkpoint", "/nonexistent/audiosep.ckpt"),
        ("audiosep_clap_checkpoint", None),
        ("audiosep_config", "/nonexistent/audiosep_base.yaml"),
    ],
)
def test_audiosep_loader_names_the_missing_config_key(tiny_audiosep, key, value):
    with pytest.raises(FileNotFoundError, match=f"separation.{key}"):
        load_audiosep(dataclasses.replace(tiny_audiosep, **{key: value}))


def test_audiosep_separator_refuses_cuda_without_a_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="CUDA"):
        AudioSepSeparator(torch.nn.Linear(1, 1), device="cuda")


@pytest.mark.media
def test_real_crunching_is_found_between_quiet_stretches(media_dir):
    import av

    with av.open(str(media_dir / "mp_crunching.mp3")) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        audio = np.concatenate([f.to_ndarray() for f in container.decode(stream)], axis=1).astype(np.float32)
    duration_s = audio.shape[1] / rate
    sources, union = separate_sources(audio, rate, SeparationConfig())
    assert np.abs(np.sum([s.audio for s in sources], axis=0) - audio).max() < 1e-4
    active_s = sum(i.end_s - i.start_s for i in union)
    assert len(union) >= 3 and 0.2 * duration_s < active_s < 0.9 * duration_s  # crunches, with quiet between
