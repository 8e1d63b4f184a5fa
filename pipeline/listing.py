"""What becomes of every file under an input folder or object-storage prefix.

Each file gets exactly one of these fates, so an auditor can answer "what happened to this
file in my folder?" for all of them:

* a **source** (a pending ledger row): a media or audio file, by extension. Audio files are
  planned like videos; probe rejects them as ``no_video``.
* a **rejected** ledger row at ingest: ``not_media`` (any other regular file; the detail names
  its extension) or ``unreadable`` (a broken symbolic link, a link loop, a file or folder that
  cannot be read, a named pipe or device; the detail says which);
* **skipped** without a row, but counted by reason in the manifest (:class:`SkippedInputs`):
  ``hidden`` (a dot file, or a dot folder, counted once and not entered), ``sidecar`` (what
  downloaders write beside a video: yt-dlp's ``.info.json``, subtitles, descriptions, partial
  downloads, a thumbnail with a media file's name) and ``extension_filter`` (not in
  ``ingest.extensions``).

A folder is walked depth-first in name order (the order ``sorted(Path.rglob("*"))`` gave, so
planning order, and with it which of two copies is the duplicate, is unchanged); a symbolic link
to a folder is followed unless it points back into the chain of folders being walked.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

MEDIA_EXTENSIONS = frozenset(
    ".mp4 .mkv .webm .mov .avi .m4v .flv .ts .mts .m2ts .mpg .mpeg .wmv .3gp .ogv .mxf".split()
)
# Planned too, so they are recorded: probe rejects them (``no_video``) unless one holds a video.
AUDIO_EXTENSIONS = frozenset(".wav .flac .mp3 .ogg .oga .opus .m4a .aac .wma .aif .aiff .mka".split())
# What yt-dlp and other downloaders write beside a video (matched on the end of the name).
SIDECAR_SUFFIXES = (".json", ".srt", ".vtt", ".ass", ".ssa", ".lrc", ".description", ".part", ".ytdl", ".nfo")
THUMBNAIL_EXTENSIONS = frozenset(".jpg .jpeg .png .webp".split())  # a sidecar only beside a same-name media file

SKIP_REASONS = ("hidden", "sidecar", "extension_filter")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file found under an input: ``problem`` is ``unreadable`` (with ``detail``) or None."""

    location: str  # a path (the input folder joined with the relative path) or an object URI
    rel: PurePosixPath  # relative to the input folder or prefix
    problem: str | None = None
    detail: str | None = None
    version: str | None = None  # an object's size and modification time, from its listing


@dataclasses.dataclass(frozen=True)
class Fate:
    """What planning does with an :class:`Entry`: ``source``, ``not_media``, ``unreadable`` (both
    recorded as rejected at ingest) or a skip reason from :data:`SKIP_REASONS`."""

    entry: Entry
    kind: str
    detail: str | None = None


class SkippedInputs:
    """Files under the inputs that got no ledger row, counted by reason (manifest ``skipped_inputs``)."""

    max_examples = 5

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, location: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(location)

    def to_json(self) -> dict[str, dict[str, object]]:
        return {r: {"num_files": n, "examples": self.examples[r]} for r, n in sorted(self.counts.items())}


def normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """``["MP4", ".mkv"]`` -> ``(".mkv", ".mp4")``; raises ValueError for an empty one."""
    out = set()
    for ext in extensions:
        text = str(ext).strip().lower()
        if text.strip(".") == "":
            raise ValueError(f"ingest.extensions: {ext!r} is not an extension")
        out.add(text if text.startswith(".") else "." + text)
    return tuple(sorted(out))


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def classify(entries: list[Entry], extensions: frozenset[str] | None = None) -> list[Fate]:
    """The fate of each entry of one input (see the module docstring), in the same order."""
    media = MEDIA_EXTENSIONS | AUDIO_EXTENSIONS
    stems = {(e.rel.parent, os.path.splitext(e.rel.name)[0]) for e in entries if _extension(e.rel.name) in media}
    fates = []
    for entry in entries:
        name, ext = entry.rel.name, _extension(entry.rel.name)
        if any(part.startswith(".") for part in entry.rel.parts):
            fates.append(Fate(entry, "hidden"))
        elif extensions is not None and ext not in extensions:
            fates.append(Fate(entry, "extension_filter"))
        elif entry.problem is not None:
            fates.append(Fate(entry, entry.problem, entry.detail))
        elif ext in media:
            fates.append(Fate(entry, "source"))
        elif name.lower().endswith(SIDECAR_SUFFIXES) or (
            ext in THUMBNAIL_EXTENSIONS and (entry.rel.parent, os.path.splitext(name)[0]) in stems
        ):
            fates.append(Fate(entry, "sidecar"))
        else:
            what = f"extension {ext!r}" if ext else "no extension"
            fates.append(Fate(entry, "not_media", f"{what}: not a video or audio extension"))
    return fates


def link_problem(path: str) -> str | None:
    """Why a symbolic link cannot be followed (a loop, a missing target), or None."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symbolic link loop ({os.readlink(path)!r} leads back to itself)"
        return f"broken symbolic link: its target {os.readlink(path)!r} does not exist"
    return None


def walk_folder(folder: str) -> list[Entry]:
    """Every non-folder entry under ``folder``; hidden folders are returned, not entered."""
    root = Path(folder)
    st = os.stat(root)
    return list(_walk(root, PurePosixPath(), frozenset({(st.st_dev, st.st_ino)})))


def _walk(folder: Path, rel: PurePosixPath, chain: frozenset[tuple[int, int]]) -> Iterator[Entry]:
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except OSError as e:
        yield Entry(str(folder), rel, "unreadable", f"cannot list the folder: {e.strerror}")
        return
    for name in names:
        path, entry_rel = folder / name, rel / name
        try:
            st = os.stat(path)
        except OSError as e:
            detail = link_problem(str(path)) or f"cannot read: {e.strerror}"
            yield Entry(str(path), entry_rel, "unreadable", detail)
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if name.startswith("."):
                yield Entry(str(path), entry_rel)  # counted as hidden, not entered
            elif key in chain:
                target = os.readlink(path) if os.path.islink(path) else str(path)
                yield Entry(
                    str(path), entry_rel, "unreadable", f"symbolic link loop: {target!r} is an enclosing folder"
                )
            else:
                yield from _walk(path, entry_rel, chain | {key})
        elif stat.S_ISREG(st.st_mode):
            yield Entry(str(path), entry_rel)
        else:
            yield Entry(str(path), entry_rel, "unreadable", "not a regular file (a named pipe, socket or device)")
