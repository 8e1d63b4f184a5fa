"""The FFmpeg binary: found once, run with a time limit and a readable error.

Lookup order: ``$JAVIS_FFMPEG``, ``ffmpeg`` on ``PATH``, then the static build that ships
inside the ``imageio-ffmpeg`` wheel (a project dependency, so a fresh machine always has one).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

_STDERR_TAIL_CHARS = 1500


class FFmpegError(RuntimeError):
    """FFmpeg exited non-zero; the message carries the end of its stderr."""


@functools.cache
def ffmpeg_exe() -> str:
    configured = os.environ.get("JAVIS_FFMPEG")
    if configured:
        if not os.access(configured, os.X_OK):
            raise FileNotFoundError(f"JAVIS_FFMPEG={configured!r} is not an executable file")
        return configured
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], timeout_s: float | None = None) -> None:
    """Run ``ffmpeg <args>`` quietly; raise :class:`FFmpegError` with its stderr on failure."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise FFmpegError(f"ffmpeg timed out after {timeout_s} s") from e
    if proc.returncode != 0:
        raise FFmpegError(f"ffmpeg exited {proc.returncode}: {proc.stderr.strip()[-_STDERR_TAIL_CHARS:]}")


@functools.cache
def ffmpeg_version() -> str:
    """The first line of ``ffmpeg -version`` of the binary this process uses."""
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"
