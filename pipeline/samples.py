"""Sample media the project makes itself with FFmpeg test sources, tones and noise, so the demo
and the tests need no download. Each file exercises one path through the pipeline:

=====================  ============================================================
file                   what happens to it
=====================  ============================================================
three_scenes.mp4       hard cuts at 4 s and 7 s (100, 175 of 250 frames), a tone: 3 clips; with the
                       quality filters the last one (still colour bars) is rejected as static
short_tail.mp4         a 3 s scene then a 1 s scene: one clip accepted, one ``too_short``
silent.mp4             digital silence: clip rejected ``silent``
quiet_noise.mp4        noise at about -70 dBFS: clip rejected ``silent``
no_audio.mp4           no audio stream: source rejected ``no_audio`` at probe
audio_ends_early.mp4   6 s of video, 3 s of audio: clip rejected ``partial_audio`` (before any encode)
rotated.mp4            320x240 pixels with a 90 degree display rotation: clip is 240x320
vfr.mp4                variable frame rate (25 fps then 12.5 fps): clip accepted, probe says VFR
black.mp4              black frames with a tone: rejected by the aesthetic filter (image quality)
text_card.mp4          eight lines of text over a moving pattern: rejected by the OCR filter
corrupt.mp4            random bytes: source rejected ``unreadable``
empty.mp4              zero bytes: source rejected ``empty_file``
=====================  ============================================================
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from stages.ffmpeg import ffmpeg_exe, fps_mode_args, has_option, run_ffmpeg

SIZE = "320x240"
FPS = 25
_ENCODE = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"]


def _video_src(name: str, seconds: float) -> list[str]:
    sep = ":" if "=" in name else "="  # "color=c=black" already has options
    return ["-f", "lavfi", "-i", f"{name}{sep}s={SIZE}:r={FPS}:d={seconds}"]


def _audio_src(expr: str) -> list[str]:
    return ["-f", "lavfi", "-i", expr]


def _scenes(dst: Path, parts: list[tuple[str, float]], audio: list[str]) -> None:
    """Concatenate test sources (hard cuts between them) with one audio input."""
    args: list[str] = []
    for name, seconds in parts:
        args += _video_src(name, seconds)
    args += audio
    n = len(parts)
    chains = ";".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}]" for i in range(n))
    concat = "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[v]"
    total = sum(seconds for _, seconds in parts)
    args += ["-filter_complex", f"{chains};{concat}", "-map", "[v]", "-map", f"{n}:a", "-t", str(total)]
    run_ffmpeg([*args, *_ENCODE, str(dst)])


def _sine(seconds: float, freq: int = 440, volume_db: float = -12.0) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=f={freq}:d={seconds}:r=44100,volume={volume_db}dB"]


_CARD_LINES = (
    "CHAPTER ONE", "The river at dawn", "Birds over the water", "A storm is coming",
    "Recorded in the valley", "Sound and picture", "Subscribe for more", "Thanks for watching",
)  # fmt: skip


def _text_card(dst: Path, seconds: float = 3.0, size: tuple[int, int] = (640, 360)) -> None:
    """Lines of text (cv2.putText) over a drifting colour pattern, with a tone; encoded by PyAV."""
    import av
    import cv2
    import numpy as np

    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(dst), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=44100, layout="mono")
        for i in range(int(seconds * FPS)):
            phase = i * 0.15
            rgb = [127 + 100 * np.sin(xx / (37 + 9 * c) + yy / 53 + phase * (c + 1)) for c in range(3)]
            img = np.ascontiguousarray(np.stack(rgb, axis=-1).clip(0, 255).astype(np.uint8))
            for n, line in enumerate(_CARD_LINES):
                org = (40, 40 + n * 40)
                cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 6, cv2.LINE_AA)
                cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
            container.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(video.encode(None))
        t = np.arange(int(seconds * 44100)) / 44100
        tone = (0.1 * np.sin(2 * np.pi * 523.25 * t)).astype(np.float32)[None, :]
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, start : start + 1024]), format="flt", layout="mono"
            )
            frame.sample_rate = 44100
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))


def copy_with_rotation(src: Path, dst: Path, degrees: int) -> None:
    """Copy ``src`` with a display rotation of ``degrees`` counter-clockwise. FFmpeg before 6.1
    has no ``-display_rotation``; its MP4 muxer turns a ``rotate`` tag into the same display matrix
    (checked with 4.2 and 5.1: PyAV reads 90 from both; 9.0 ignores the tag)."""
    if has_option("display_rotation"):
        run_ffmpeg(["-display_rotation", str(degrees), "-i", str(src), "-c", "copy", str(dst)])
    else:
        run_ffmpeg(["-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(dst)])


def make_sample_media(dest: str | os.PathLike) -> list[Path]:
    """Write the sample files into ``dest`` (created if needed); returns their paths."""
    out = Path(dest)
    ffmpeg_exe()  # an unusable $JAVIS_FFMPEG stops here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    p = {name: out / name for name in (
        "three_scenes.mp4", "short_tail.mp4", "silent.mp4", "quiet_noise.mp4", "no_audio.mp4",
        "audio_ends_early.mp4", "rotated.mp4", "vfr.mp4", "corrupt.mp4", "empty.mp4", "black.mp4",
        "text_card.mp4",
    )}  # fmt: skip
    _scenes(p["three_scenes.mp4"], [("testsrc2", 4), ("smptehdbars", 3), ("rgbtestsrc", 3)], _sine(10))
    _scenes(p["short_tail.mp4"], [("testsrc2", 3), ("smptehdbars", 1)], _sine(4, 660))
    silence = ["-f", "lavfi", "-t", "3", "-i", "anullsrc=r=44100:cl=stereo"]  # 4.2 has no anullsrc d=
    _scenes(p["silent.mp4"], [("testsrc2", 3)], silence)
    _scenes(p["quiet_noise.mp4"], [("testsrc2", 3)], _audio_src("anoisesrc=d=3:c=white:a=0.0005:r=44100:seed=7"))
    run_ffmpeg([*_video_src("testsrc2", 3), *_ENCODE[:6], "-an", str(p["no_audio.mp4"])])
    _scenes(p["audio_ends_early.mp4"], [("testsrc2", 6)], _sine(3, 550))
    rotated_src = out / "rotated.unrotated.mp4"
    _scenes(rotated_src, [("testsrc2", 3)], _sine(3, 880))
    copy_with_rotation(rotated_src, p["rotated.mp4"], 90)
    rotated_src.unlink()
    # 50 frames 40 ms apart, then 25 frames 80 ms apart: 4 s at a variable rate. Both inputs end
    # at 4 s; an output -t 4 cut the audio at 3 s with FFmpeg 4.2 and 5.1 (not 9.0)
    vfr_pts = r"if(lt(N\,50)\,N*0.04\,2+(N-50)*0.08)/TB"
    run_ffmpeg(
        [*_video_src("testsrc2", 3), *_sine(4, 330), "-vf", f"setpts={vfr_pts}", *fps_mode_args("passthrough"),
         "-enc_time_base", "1/1000", *_ENCODE, str(p["vfr.mp4"])]
    )  # fmt: skip
    _scenes(p["black.mp4"], [("color=c=black", 3)], _sine(3, 392))
    _text_card(p["text_card.mp4"])
    p["corrupt.mp4"].write_bytes(random.Random(0).randbytes(64 * 1024))
    p["empty.mp4"].write_bytes(b"")
    return sorted(p.values())
