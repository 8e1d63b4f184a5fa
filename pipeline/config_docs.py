"""Every config key with its value under a preset and a one-line doc (``javis config``).

The docs are the config dataclasses' own comments, read from their source once: the comment
at the end of a field's line, else the comment lines right above it. The code is the single
place a setting is explained, so the listing cannot drift from it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
from collections.abc import Iterator
from typing import Any

from pipeline.config import Config, StageResources, preset_values

_PRAGMA = re.compile(r"\s*\b(fmt: (skip|off|on)|noqa(: [A-Z0-9, ]+)?|type: ignore\S*)\s*(\(.*\))?$")


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    key: str  # dotted, as --set takes it: section.key (resources.<stage>.key, <section>.llm.key)
    value: Any  # under the preset, as JSON would hold it
    doc: str  # one line, from the field's comment ("" if it has none)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "doc": self.doc}


def _comments(source: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    found = {}
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            text = _PRAGMA.sub("", tok.string.lstrip("#").strip())
            if text:
                found[tok.start[0]] = text
    return found


@functools.cache
def field_docs(cls: type, above: bool = True) -> dict[str, str]:
    """``{attribute name: doc}`` for a class's fields or constants (base classes included), from
    its comments: the one at the end of the line, else (``above``) the comment lines right above."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if k.__module__ != "builtins"]):
        source = textwrap.dedent(inspect.getsource(klass))
        lines, comments = source.splitlines(), _comments(source)
        body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
        for node in body:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
            if len(targets) != 1 or not isinstance(targets[0], ast.Name):
                continue
            inline = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            block, n = [], node.lineno - 1
            while above and n in comments and lines[n - 1].lstrip().startswith("#"):
                block.insert(0, comments[n])
                n -= 1
            docs[targets[0].id] = " ".join(inline or block)
    return docs


def _walk(cls: type, values: dict[str, Any], prefix: str) -> Iterator[ConfigKey]:
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        value = values.get(field.name)
        key = f"{prefix}{field.name}"
        if field.name == "resources" and cls is Config:
            for stage in sorted(value or {}):
                yield from _walk(StageResources, value[stage], f"{key}.{stage}.")
        elif isinstance(value, dict) and _is_dataclass_field(field):
            yield from _walk(_field_class(field), value, f"{key}.")
        else:
            yield ConfigKey(key, value, docs.get(field.name, ""))


def _field_class(field: dataclasses.Field) -> type:
    has_factory = field.default_factory is not dataclasses.MISSING
    return type(field.default_factory() if has_factory else field.default)


def _is_dataclass_field(field: dataclasses.Field) -> bool:
    return dataclasses.is_dataclass(_field_class(field))


def config_keys(preset: str = "default") -> list[ConfigKey]:
    """Every key of the config under ``preset``, in the order of the dataclasses."""
    return list(_walk(Config, preset_values(preset), ""))
