"""The configuration reference, docs/configuration-reference.md, generated from the typed config so that it cannot
drift from the code: every key with its default, what it admits and what it means. The meaning is the comment
beside or above the field in pipeline/config/schema.py, a section's is its class docstring; tests/test_config.py checks
that every key has one and that the committed file is what this module writes.

    .venv/bin/python -m pipeline.config_reference > docs/configuration-reference.md    (make config-reference)
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import tokenize
import typing
from dataclasses import dataclass

from pipeline.config import ModelConfig, PipelineConfig, TrainConfig, schema

KIND_OF = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


@dataclass(frozen=True)
class KeyDoc:
    key: str            # section.key as --set and the YAML name it
    default: str
    admits: str
    meaning: str


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """{(class, field): its comment}: the comment lines right above the field, then the one beside it."""
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            above, line = [], statement.lineno - 1
            while line in comments and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            beside = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1)
                      if n in comments and not lines[n - 1].lstrip().startswith("#")]
            found[(node.name, statement.target.id)] = " ".join(above + beside)
    return found


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | dict) or dataclasses.is_dataclass(value):
        return f"`{json.dumps(_as_written(value))}`"
    return f"`{value}`"


def _as_written(value: typing.Any) -> typing.Any:
    """`value` as a config file would hold it; a model's settings only where they differ from ModelConfig's."""
    if dataclasses.is_dataclass(value):
        return {f.name: _as_written(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) != getattr(ModelConfig, f.name, None)}
    if isinstance(value, dict):
        return {key: _as_written(item) for key, item in value.items()}
    return value


def _admits(field: dataclasses.Field, annotation: typing.Any) -> str:
    allowed = field.metadata.get("allowed")
    if allowed is not None:
        return str(allowed) if typing.get_origin(annotation) is not dict else f"values {allowed}"
    if typing.get_origin(annotation) is dict:
        return "a mapping"
    return KIND_OF.get(annotation, str(annotation))


def section_keys(prefix: str, cls: type, comments: dict[tuple[str, str], str]) -> list[KeyDoc]:
    hints = typing.get_type_hints(cls)
    return [KeyDoc(f"{prefix}{field.name}", _default(field), _admits(field, hints[field.name]),
                   comments.get((cls.__name__, field.name), ""))
            for field in dataclasses.fields(cls)]


def sections() -> list[tuple[str, str, list[KeyDoc]]]:
    """(section, what it is for, its keys), in the config's order; train.models.<name> after train."""
    comments = field_comments(inspect.getsource(schema))
    hints = typing.get_type_hints(PipelineConfig)
    found = [("(top level)", "", [KeyDoc("profile", _default(dataclasses.fields(PipelineConfig)[0]), "text",
                                         "the profile the config was loaded with (--profile, else the file's)")])]
    for field in dataclasses.fields(PipelineConfig)[1:]:
        cls = hints[field.name]
        found.append((field.name, _docstring(cls), section_keys(f"{field.name}.", cls, comments)))
        if cls is TrainConfig:
            found.append(("train.models.<name>", _docstring(ModelConfig),
                          section_keys("train.models.<name>.", ModelConfig, comments)))
    return found


def _docstring(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    out = ["# Configuration reference", "",
           "Generated from `pipeline/config/schema.py` by `make config-reference`: do not edit by hand. Set a key in "
           "the config file (`section: {key: value}`), in a profile, or with `--set section.key=value`; "
           "[configuration.md](configuration.md) says how they combine and where paths resolve.", ""]
    for name, about, keys in sections():
        out += [f"## {name}", ""] + ([about, ""] if about else [])
        out += ["| key | default | admits | meaning |", "|---|---|---|---|"]
        out += [f"| `{k.key}` | {_cell(k.default)} | {_cell(k.admits)} | {_cell(k.meaning)} |" for k in keys]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference_markdown(), end="")
