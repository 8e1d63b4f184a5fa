"""Prompt templates, one Markdown file per prompt, versioned; :func:`load_prompt` reads them.

File format (``prompts/<name>.md``)::

    ---
    name: caption_video
    version: 1
    ---
    # system
    You are ...
    # user
    Describe ... {{title}} ...

The front matter holds ``name`` (must match the file name) and ``version`` (an integer: bump it
whenever the text changes, since every annotated row stores the prompt id ``name@version``). The
body has an optional ``# system`` section and a ``# user`` section; a line holding exactly one of
those headings starts a section. Placeholders are ``{{name}}``.

Rendering substitutes every placeholder in one pass, so a value is never expanded again: a title
holding ``{{caption}}`` or ``}}{`` stays literal text. A missing or an unexpected value raises.
Values from the outside world (titles, keywords, model captions) go through :func:`untrusted` or
:func:`quoted`, which render them as JSON string literals: newlines and quotes are escaped, so such
a value cannot end its line, open a new section or pose as part of the instructions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any

PROMPT_DIR = Path(__file__).resolve().parent
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SECTION = re.compile(r"^# (system|user)[ \t]*$", re.MULTILINE)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\s]+")


@dataclasses.dataclass(frozen=True)
class Rendered:
    system: str | None
    user: str


@dataclasses.dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    system: str | None  # template text of the system turn (None: no system turn)
    user: str  # template text of the user turn

    @property
    def id(self) -> str:
        """What annotated rows store, e.g. ``caption_video@1``."""
        return f"{self.name}@{self.version}"

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(_PLACEHOLDER.findall(self.user + (self.system or "")))

    def render(self, **values: Any) -> Rendered:
        """Both turns with every placeholder replaced by ``str(value)``."""
        missing = self.placeholders - values.keys()
        if missing:
            raise KeyError(f"prompt {self.id}: no value for placeholder(s) {sorted(missing)}")
        unexpected = values.keys() - self.placeholders
        if unexpected:
            raise KeyError(f"prompt {self.id}: has no placeholder(s) {sorted(unexpected)}")

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)

        return Rendered(system=None if self.system is None else fill(self.system), user=fill(self.user))


def _front_matter(text: str, path: Path) -> tuple[dict[str, str], str]:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ValueError(f"{path}: must start with a '---' front-matter block")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise ValueError(f"{path}: front matter is not closed with '---'") from None
    header = {}
    for line in lines[1:end]:
        if line.strip():
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"{path}: front-matter line {line!r} is not 'key: value'")
            header[key.strip()] = value.strip()
    return header, "\n".join(lines[end + 1 :])


def parse_prompt(text: str, path: Path) -> Prompt:
    """A :class:`Prompt` from a file's text (see the module docstring for the format)."""
    header, body = _front_matter(text, path)
    if set(header) - {"name", "version", "description"} or not {"name", "version"} <= set(header):
        raise ValueError(f"{path}: front matter needs 'name' and 'version' (and may have 'description')")
    name = header["name"]
    if not _NAME.fullmatch(name) or name != path.stem:
        raise ValueError(f"{path}: name {name!r} must be snake_case and match the file name")
    if not header["version"].isdigit() or int(header["version"]) < 1:
        raise ValueError(f"{path}: version must be a positive integer, got {header['version']!r}")
    parts = _SECTION.split(body)  # [before, "system", text, "user", text] or [before, "user", text]
    if parts[0].strip():
        raise ValueError(f"{path}: text before the first '# system' / '# user' heading")
    sections = dict(zip(parts[1::2], (p.strip() for p in parts[2::2])))
    if len(sections) != len(parts[1::2]) or "user" not in sections or not sections["user"]:
        raise ValueError(f"{path}: needs exactly one non-empty '# user' section and at most one '# system'")
    return Prompt(name=name, version=int(header["version"]), system=sections.get("system"), user=sections["user"])


@functools.cache
def load_prompt(name: str) -> Prompt:
    """The prompt stored in ``prompts/<name>.md``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid prompt name {name!r}")
    path = PROMPT_DIR / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt {name!r} (expected {path}); known: {list_prompts()}")
    return parse_prompt(path.read_text(encoding="utf-8"), path)


def list_prompts() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.md"))


def quoted(text: str | None, max_chars: int = 4000) -> str:
    """``text`` as a JSON string literal (newlines and quotes escaped), cut to ``max_chars``."""
    text = "" if text is None else str(text)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "\u2026"
    return json.dumps(text, ensure_ascii=False)


def untrusted(text: str | None, max_chars: int = 200) -> str:
    """Outside metadata (a title, a search keyword) for a prompt: whitespace and control
    characters collapsed to single spaces, cut to ``max_chars``, as a JSON string literal;
    ``null`` when there is none, so the model sees that nothing was given."""
    if text is None or not str(text).strip():
        return "null"
    return quoted(_CONTROL.sub(" ", str(text)).strip(), max_chars)


def json_block(schema: dict[str, Any]) -> str:
    """A JSON schema as it is embedded in a prompt."""
    return json.dumps(schema, indent=2, ensure_ascii=False)
