"""Long 720p H.264 + AAC sources built from the real recordings in ``../shared/media``.

Each *loop* is the three real videos one after another (the PySceneDetect test video, Big Buck
Bunny, the PySceneDetect fades), each scaled and padded to 1280x720 at 30 fps, under sound taken
from the real recordings: rain, speech, crunching, Big Buck Bunny's own score. The four loops pair
the pictures with different sounds, so a run meets every fate the filters know (speech, static,
text, silence-free ambience). A source of N minutes is the loops repeated and stream-copied
end to end (the concat demuxer), so a one-hour source costs seconds to build once the loops exist.

Used by ``bench_run.py``; also handy on its own::

    python bench/longmedia.py --media ../shared/media --minutes 5.5 5.5 --out /tmp/long
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as ``python bench/longmedia.py`` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

WIDTH, HEIGHT, FPS = 1280, 720, 30
GOP_FRAMES = 150  # a keyframe every 5 s, as on common video sites
PICTURES = ("psd_testvideo.mp4", "mp_big_buck_bunny_0_30.webm", "psd_fades.mp4")  # 24 s, 30 s, 10 s
SOUNDS = ("mp_rain.mp3", "sv_test.wav", "mp_crunching.mp3", "fw_jfk.flac")
# (picture, sound or None for the picture's own audio, offset into the sound in s), per loop
LOOPS = (
    (("psd_testvideo.mp4", "mp_rain.mp3", 0.0), ("mp_big_buck_bunny_0_30.webm", None, 0.0),
     ("psd_fades.mp4", "mp_crunching.mp3", 0.0)),
    (("psd_testvideo.mp4", "sv_test.wav", 0.0), ("mp_big_buck_bunny_0_30.webm", None, 0.0),
     ("psd_fades.mp4", "mp_rain.mp3", 20.0)),
    (("psd_testvideo.mp4", "mp_crunching.mp3", 0.0), ("mp_big_buck_bunny_0_30.webm", "mp_rain.mp3", 30.0),
     ("psd_fades.mp4", "fw_jfk.flac", 0.0)),
    (("psd_testvideo.mp4", "mp_rain.mp3", 35.0), ("mp_big_buck_bunny_0_30.webm", None, 0.0),
     ("psd_fades.mp4", "sv_test.wav", 30.0)),
)  # fmt: skip


def _loop_args(media: Path, loop: tuple, dst: Path) -> list[str]:
    """FFmpeg arguments for one loop: three pictures, each under its sound, concatenated."""
    args: list[str] = []
    graph = []
    num_inputs = 0
    for i, (picture, sound, offset) in enumerate(loop):
        args += ["-i", str(media / picture)]
        video_in = audio_in = num_inputs
        num_inputs += 1
        if sound is not None:  # looped, so a short sound covers a longer picture
            args += ["-stream_loop", "-1", "-ss", f"{offset}", "-i", str(media / sound)]
            audio_in = num_inputs
            num_inputs += 1
        seconds = _picture_seconds(media / picture)
        graph.append(
            f"[{video_in}:v]scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=decrease,"
            f"pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2,fps={FPS},setsar=1,format=yuv420p,setpts=PTS-STARTPTS[v{i}]"
        )
        graph.append(
            f"[{audio_in}:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo,"
            f"atrim=0:{seconds:.3f},asetpts=PTS-STARTPTS[a{i}]"
        )
    graph.append("".join(f"[v{i}][a{i}]" for i in range(len(loop))) + f"concat=n={len(loop)}:v=1:a=1[v][a]")
    args += ["-filter_complex", ";".join(graph), "-map", "[v]", "-map", "[a]"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", str(GOP_FRAMES), "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", str(dst)]
    return args


def _picture_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base


def make_loops(media: Path, work: Path) -> list[Path]:
    """The four loops (about 64 s each), built once and reused."""
    from stages.ffmpeg import run_ffmpeg

    missing = [n for n in (*PICTURES, *SOUNDS) if not (media / n).is_file()]
    if missing:
        raise SystemExit(f"{media} lacks {missing}: point --media at ../shared/media")
    work.mkdir(parents=True, exist_ok=True)
    loops = []
    for i, loop in enumerate(LOOPS):
        dst = work / f"loop{i}.mp4"
        if not dst.is_file():
            tmp = work / f"loop{i}.part.mp4"
            run_ffmpeg(_loop_args(media, loop, tmp))
            os.replace(tmp, dst)
        loops.append(dst)
    return loops


def make_source(loops: list[Path], minutes: float, dst: Path, first_loop: int = 0) -> Path:
    """An N-minute source: the loops in turn (starting at ``first_loop``), stream-copied."""
    from stages.ffmpeg import run_ffmpeg

    loop_s = [_picture_seconds(p) for p in loops]
    count = max(1, math.ceil(minutes * 60 / (sum(loop_s) / len(loop_s))))
    order = [loops[(first_loop + k) % len(loops)] for k in range(count)]
    listing = dst.with_suffix(".txt")
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in order))
    tmp = dst.with_name(dst.stem + ".part.mp4")
    run_ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-t", f"{minutes * 60:.3f}", "-c", "copy", str(tmp)])
    os.replace(tmp, dst)
    listing.unlink()
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--media", default=os.environ.get("JAVIS_MEDIA_DIR", str(REPO_ROOT.parent / "shared" / "media"))
    )
    parser.add_argument("--minutes", type=float, nargs="+", required=True, help="one source per value")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    loops = make_loops(Path(args.media), out / "loops")
    for i, minutes in enumerate(args.minutes):
        print(make_source(loops, minutes, out / f"source{i}_{minutes:g}min.mp4", first_loop=i))


if __name__ == "__main__":
    main()
