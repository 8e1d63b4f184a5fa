"""Deterministic ids: the same input always gets the same id, which makes resume and
de-duplication work.

* ``source_id``: from the canonical URL for remote inputs, from the file's content (sha256)
  for local files, so renaming or moving a file does not create a new source.
* ``clip_id``: from ``source_id`` and the clip's first and last (exclusive) frame numbers.
"""

from __future__ import annotations

import hashlib
import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_ID_HEX = 16  # 64 bits: collisions are negligible below ~10^8 sources
_TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "si", "feature")
_HASH_CHUNK_BYTES = 4 << 20


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_ID_HEX]


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, drop fragment, default ports and tracking parameters,
    sort the query. Raises ``ValueError`` for anything that is not an http(s) URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname.lower()
    default_port = {"http": 80, "https": 443}[scheme]
    netloc = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
    query = sorted(
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.startswith(_TRACKING_PARAMS)
    )
    return urlunsplit((scheme, netloc, parts.path or "/", urlencode(query), ""))


def source_id_for_url(url: str) -> str:
    return "s" + _digest("url:" + canonical_url(url))


def file_sha256(path: str | os.PathLike) -> str:
    """Streamed sha256 of a file (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def source_id_for_content(sha256_hex: str) -> str:
    return "s" + _digest("sha256:" + sha256_hex)


def source_id_for_text(kind: str, text: str) -> str:
    """Id for an input that is neither a URL nor a file (a search query, an unreadable path)."""
    return "s" + _digest(f"{kind}:{text}")


def clip_id(source_id: str, start_frame: int, end_frame: int) -> str:
    if end_frame <= start_frame:
        raise ValueError(f"empty clip [{start_frame}, {end_frame}) of {source_id}")
    return "c" + _digest(f"{source_id}:{start_frame}:{end_frame}")
