"""The FFmpeg binary: chosen once per process by what it can do, run with a time limit and a
readable error.

Supported: FFmpeg 4.2 or newer (tested with 4.2.2, Debian 12's 5.1 and the wheel's 9.0) built
with libx264, aac and the standard lavfi sources and filters (:data:`REQUIRED_ENCODERS`,
:data:`REQUIRED_FILTERS`). Which binary runs:

1. ``$JAVIS_FFMPEG`` always; one that is too old or lacks a requirement is an error
   (:class:`FFmpegUnsupported`), never silently replaced.
2. an ``ffmpeg`` on ``PATH`` if it meets the requirements;
3. otherwise the static build inside the ``imageio-ffmpeg`` wheel (a project dependency, so a
   fresh machine always has one).

Options that newer builds renamed are adapted, not required: ``-fps_mode`` (5.1+) becomes
``-vsync`` (:func:`fps_mode_args`); ``-display_rotation`` (6.1+), which only the sample generator
uses, becomes a ``rotate`` tag there. A version line we cannot parse (a git build, a wrapper
script) is judged by its encoders, filters and options alone. Ray workers run the same
selection with the driver's ``JAVIS_*`` environment, so every process states its choice.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
import subprocess
from typing import Any, Literal

log = logging.getLogger(__name__)

MIN_VERSION = (4, 2)  # oldest tested: 4.2.2 (imageio-ffmpeg 0.4.7's build); Ubuntu 22.04 has 4.4
REQUIRED_ENCODERS = ("libx264", "aac")  # the cut's and the sample generator's codecs
REQUIRED_FILTERS = (  # the cut's scale, the sample generator's sources and chains
    "scale", "format", "setsar", "concat", "setpts", "volume",
    "testsrc2", "smptehdbars", "rgbtestsrc", "color", "sine", "anullsrc", "anoisesrc",
)  # fmt: skip
ADAPTED_OPTIONS = ("fps_mode", "display_rotation")  # newer options with an older equivalent
_STDERR_TAIL_CHARS = 1500
_INSPECT_TIMEOUT_S = 30.0  # a binary that hangs on `-version` is as good as none

Source = Literal["env", "path", "bundled"]


class FFmpegError(RuntimeError):
    """FFmpeg exited non-zero; the message carries the end of its stderr."""


class FFmpegUnsupported(ValueError):
    """``$JAVIS_FFMPEG`` names an FFmpeg that javis cannot use (a user setting, hence ValueError)."""


@dataclasses.dataclass(frozen=True)
class FFmpegBinary:
    """An FFmpeg executable and what it offers, read from ``-version``, ``-h long``,
    ``-encoders`` and ``-filters``."""

    path: str
    version_line: str  # first line of `ffmpeg -version`, "unknown" if it printed nothing
    version: tuple[int, ...] | None  # (5, 1) from "ffmpeg version 5.1.9-0+deb12u1"; None if unparsable
    options: frozenset[str]  # "fps_mode", "vsync", ... (without the dash)
    encoders: frozenset[str]
    filters: frozenset[str]

    def missing(self) -> list[str]:
        """What keeps javis from using this binary; empty if nothing."""
        lacks = []
        if self.version is not None and self.version < MIN_VERSION:
            lacks.append(f"version {_dotted(self.version)} < {_dotted(MIN_VERSION)}")
        for kind, needed, present in (("encoder", REQUIRED_ENCODERS, self.encoders),
                                      ("filter", REQUIRED_FILTERS, self.filters)):  # fmt: skip
            if absent := [n for n in needed if n not in present]:
                lacks.append(f"no {kind}{'s' if len(absent) > 1 else ''} {', '.join(absent)}")
        return lacks

    def adaptations(self) -> list[str]:
        """Options javis replaces with an older equivalent on this binary."""
        return [f"-{o}" for o in ADAPTED_OPTIONS if o not in self.options]


@dataclasses.dataclass(frozen=True)
class FFmpegChoice:
    """The binary this process runs, where it came from and why it was chosen."""

    binary: FFmpegBinary
    source: Source
    reason: str

    def to_json(self) -> dict[str, Any]:
        b = self.binary
        return {"path": b.path, "version": b.version_line, "source": self.source, "reason": self.reason,
                "adapted_options": b.adaptations()}  # fmt: skip


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def parse_version(version_line: str) -> tuple[int, ...] | None:
    """(major, minor) from ``ffmpeg version 4.4.2-0ubuntu0.22.04.1`` or ``ffmpeg version n7.1``."""
    m = re.match(r"\S+ version n?(\d+)\.(\d+)", version_line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _names(listing: str) -> frozenset[str]:
    """Names from a ``-encoders``/``-filters`` table: the second word of each row that starts
    with a flag field (its width differs between versions); legend rows have ``=`` there."""
    rows = (line.split() for line in listing.splitlines())
    return frozenset(r[1] for r in rows if len(r) > 1 and r[1] != "=" and re.fullmatch(r"[A-Z.|]+", r[0]))


def _output(path: str, *args: str) -> str:
    proc = subprocess.run(
        [path, "-hide_banner", *args], capture_output=True, text=True, timeout=_INSPECT_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise OSError(f"`{os.path.basename(path)} {' '.join(args)}` exited {proc.returncode}")
    return proc.stdout


@functools.cache
def inspect_ffmpeg(path: str) -> FFmpegBinary:
    """Ask the binary at ``path`` for its version, options, encoders and filters (cached per
    process). Raises OSError (or subprocess.TimeoutExpired) when it does not run."""
    version_out = subprocess.run(
        [path, "-version"], capture_output=True, text=True, timeout=_INSPECT_TIMEOUT_S, check=False
    ).stdout
    version_line = version_out.splitlines()[0].strip() if version_out.strip() else "unknown"
    options = frozenset(re.findall(r"^-(\w+)", _output(path, "-h", "long"), flags=re.MULTILINE))
    encoders = _names(_output(path, "-encoders"))
    filters = _names(_output(path, "-filters"))
    return FFmpegBinary(path, version_line, parse_version(version_line), options, encoders, filters)


def _describe(b: FFmpegBinary) -> str:
    """The version as the binary spells it (``5.1.9-0+deb12u1``); the whole line if unusual."""
    m = re.match(r"\S+ version (\S+)", b.version_line)
    return m.group(1) if m else b.version_line


@functools.cache
def select_ffmpeg() -> FFmpegChoice:
    """The FFmpeg this process runs (see the module docstring), chosen once and logged."""
    choice = _select()
    log.info("FFmpeg: %s (%s)", choice.binary.path, choice.reason)
    return choice


def _select() -> FFmpegChoice:
    configured = os.environ.get("JAVIS_FFMPEG")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise FileNotFoundError(f"JAVIS_FFMPEG={configured!r} is not an executable file")
        try:
            binary = inspect_ffmpeg(configured)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FFmpegUnsupported(f"JAVIS_FFMPEG={configured!r} does not run: {e}") from e
        if lacks := binary.missing():
            raise FFmpegUnsupported(
                f"JAVIS_FFMPEG={configured!r} ({binary.version_line}) cannot be used ({'; '.join(lacks)}). "
                f"javis needs FFmpeg {_dotted(MIN_VERSION)}+ with {', '.join(REQUIRED_ENCODERS)}; "
                "unset JAVIS_FFMPEG to use the ffmpeg on PATH or the bundled build"
            )
        return FFmpegChoice(binary, "env", f"JAVIS_FFMPEG ({_describe(binary)}) is set" + _adapted(binary))
    found = shutil.which("ffmpeg")
    why_not_path = "no ffmpeg on PATH"
    if found:
        try:
            binary = inspect_ffmpeg(found)
        except (OSError, subprocess.TimeoutExpired) as e:
            why_not_path = f"ffmpeg on PATH ({found}) does not run ({e})"
        else:
            if not (lacks := binary.missing()):
                return FFmpegChoice(
                    binary, "path", f"ffmpeg on PATH ({_describe(binary)}) qualifies" + _adapted(binary)
                )
            why_not_path = f"ffmpeg on PATH ({found}, {_describe(binary)}) is unsuitable ({'; '.join(lacks)})"
    import imageio_ffmpeg

    bundled = inspect_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    return FFmpegChoice(bundled, "bundled", f"{why_not_path}: using the bundled {_describe(bundled)}")


def _adapted(binary: FFmpegBinary) -> str:
    adapted = binary.adaptations()
    return f"; it lacks {', '.join(adapted)}: using older equivalents" if adapted else ""


def ffmpeg_exe() -> str:
    """Path of the FFmpeg this process runs."""
    return select_ffmpeg().binary.path


def ffmpeg_version() -> str:
    """The first line of ``ffmpeg -version`` of the binary this process uses."""
    return select_ffmpeg().binary.version_line


def ffmpeg_info() -> dict[str, Any]:
    """The manifest's record of the FFmpeg in use: path, version, source, reason."""
    return select_ffmpeg().to_json()


def has_option(name: str) -> bool:
    """Whether the FFmpeg in use knows the command-line option ``-name``."""
    return name in select_ffmpeg().binary.options


def fps_mode_args(mode: str = "passthrough") -> list[str]:
    """``-fps_mode MODE``, or ``-vsync MODE`` on builds older than 5.1 (same modes)."""
    return ["-fps_mode", mode] if has_option("fps_mode") else ["-vsync", mode]


def run_ffmpeg(args: list[str], timeout_s: float | None = None) -> None:
    """Run ``ffmpeg <args>`` quietly; raise :class:`FFmpegError` with its stderr on failure."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise FFmpegError(f"ffmpeg timed out after {timeout_s} s") from e
    if proc.returncode != 0:
        raise FFmpegError(f"ffmpeg exited {proc.returncode}: {proc.stderr.strip()[-_STDERR_TAIL_CHARS:]}")
