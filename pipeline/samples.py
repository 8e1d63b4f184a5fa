"""Sample media the project makes itself with FFmpeg test sources, tones and noise, so the demo
and the tests need no download. Each file exercises one path through the pipeline:

=====================  ============================================================
file                   what happens to it
=====================  ============================================================
three_scenes.mp4       hard cuts at 4 s and 7 s (100, 175 of 250 frames), a tone: 3 clips accepted
short_tail.mp4         a 3 s scene then a 1 s scene: one clip accepted, one ``too_short``
silent.mp4             digital silence: clip rejected ``silent``
quiet_noise.mp4        noise at about -70 dBFS: clip rejected ``silent``
no_audio.mp4           no audio stream: source rejected ``no_audio`` at probe
audio_ends_early.mp4   6 s of video, 3 s of audio: clip rejected ``av_mismatch``
rotated.mp4            320x240 pixels with a 90 degree display rotation: clip is 240x320
vfr.mp4                variable frame rate (25 fps then 12.5 fps): clip accepted, probe says VFR
corrupt.mp4            random bytes: source rejected ``unreadable``
empty.mp4              zero bytes: source rejected ``empty_file``
=====================  ============================================================
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from stages.ffmpeg import run_ffmpeg

SIZE = "320x240"
FPS = 25
_ENCODE = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"]


def _video_src(name: str, seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"{name}=s={SIZE}:r={FPS}:d={seconds}"]


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


def make_sample_media(dest: str | os.PathLike) -> list[Path]:
    """Write the sample files into ``dest`` (created if needed); returns their paths."""
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    p = {name: out / name for name in (
        "three_scenes.mp4", "short_tail.mp4", "silent.mp4", "quiet_noise.mp4", "no_audio.mp4",
        "audio_ends_early.mp4", "rotated.mp4", "vfr.mp4", "corrupt.mp4", "empty.mp4",
    )}  # fmt: skip
    _scenes(p["three_scenes.mp4"], [("testsrc2", 4), ("smptehdbars", 3), ("rgbtestsrc", 3)], _sine(10))
    _scenes(p["short_tail.mp4"], [("testsrc2", 3), ("smptehdbars", 1)], _sine(4, 660))
    _scenes(p["silent.mp4"], [("testsrc2", 3)], _audio_src("anullsrc=r=44100:cl=stereo:d=3"))
    _scenes(p["quiet_noise.mp4"], [("testsrc2", 3)], _audio_src("anoisesrc=d=3:c=white:a=0.0005:r=44100:seed=7"))
    run_ffmpeg([*_video_src("testsrc2", 3), *_ENCODE[:6], "-an", str(p["no_audio.mp4"])])
    _scenes(p["audio_ends_early.mp4"], [("testsrc2", 6)], _sine(3, 550))
    rotated_src = out / "rotated.unrotated.mp4"
    _scenes(rotated_src, [("testsrc2", 3)], _sine(3, 880))
    run_ffmpeg(["-display_rotation", "90", "-i", str(rotated_src), "-c", "copy", str(p["rotated.mp4"])])
    rotated_src.unlink()
    # 50 frames 40 ms apart, then 25 frames 80 ms apart: 4 s at a variable rate
    vfr_pts = r"if(lt(N\,50)\,N*0.04\,2+(N-50)*0.08)/TB"
    run_ffmpeg(
        [*_video_src("testsrc2", 3), *_sine(4, 330), "-vf", f"setpts={vfr_pts}", "-fps_mode", "passthrough",
         "-enc_time_base", "1/1000", *_ENCODE, "-t", "4", str(p["vfr.mp4"])]
    )  # fmt: skip
    p["corrupt.mp4"].write_bytes(random.Random(0).randbytes(64 * 1024))
    p["empty.mp4"].write_bytes(b"")
    return sorted(p.values())
