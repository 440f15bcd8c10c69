"""Reading scenario files: safe YAML, bounded size, and errors a person can act on.

Every failure to load a scenario becomes a :class:`ScenarioError` whose message is one paragraph:
the file, then each problem as ``field.path: what is wrong (got ...)``, with the allowed keys
or values where that helps. Nothing here prints a traceback.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lumen.scenarios.schema import Scenario

#: Scenario files are small; a bigger file is almost certainly the wrong file.
MAX_FILE_BYTES = 1 << 20
#: Scenario files nest a few levels; deeper nesting is refused before it exhausts the stack.
MAX_NESTING = 32
_MAX_PROBLEMS_SHOWN = 8


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; ``str()`` is the one-paragraph message for users."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        shown = list(self.problems[:_MAX_PROBLEMS_SHOWN])
        if len(self.problems) > _MAX_PROBLEMS_SHOWN:
            shown.append(f"and {len(self.problems) - _MAX_PROBLEMS_SHOWN} more")
        count = "1 problem" if len(self.problems) == 1 else f"{len(self.problems)} problems"
        super().__init__(f"{source}: invalid scenario ({count}): " + "; ".join(shown) + ".")


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also rejects duplicate keys and aliases.

    PyYAML silently keeps the last of two equal keys, which hides typos; aliases let a tiny file
    expand into a huge document ("billion laughs"), and scenario files never need them. Nesting
    deeper than :data:`MAX_NESTING` levels is refused (PyYAML's composer recurses per level).
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in scenario files", event.start_mark
            )
        if self._depth >= MAX_NESTING:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"nested more than {MAX_NESTING} levels deep; scenario files need a few",
                event.start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document with the strict safe loader, mapping errors to ScenarioError."""
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ScenarioError(source, [_yaml_problem(exc)]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [f"malformed YAML: {exc}"]) from None
    except RecursionError:  # a shape the nesting limit does not see (e.g. in the scanner)
        raise ScenarioError(source, ["nested too deeply to read"]) from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``line L, column C: problem (context started at line L', column C')``."""

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    problem = (exc.problem or "malformed YAML").replace("'<stream end>'", "the end of the file")
    text = f"{at(exc.problem_mark)}: {problem}" if exc.problem_mark else problem
    if exc.context and exc.context_mark:
        text += f" ({exc.context} started at {at(exc.context_mark)})"
    return text


def read_scenario_text(path: Path) -> str:
    """Read a scenario file, refusing missing, oversized, binary or non-UTF-8 files."""
    source = str(path)
    if not path.exists():
        raise ScenarioError(source, ["no such file"])
    if not path.is_file():
        raise ScenarioError(source, [not_a_file(path)])
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ScenarioError(
            source, [f"file is {size} bytes; scenario files are limited to {MAX_FILE_BYTES} bytes"]
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [f"not UTF-8 text (byte {exc.start})"]) from None


def not_a_file(path: Path) -> str:
    """Why an existing ``path`` cannot be read as a file: a directory, or a device, pipe or
    socket (``/dev/zero`` never ends)."""
    if path.is_dir():
        return "is a directory, not a file"
    return "is not a regular file (a device, pipe or socket)"


def validate_scenario(data: Any, source: str) -> Scenario:
    """Validate parsed YAML against the schema, turning pydantic errors into a ScenarioError."""
    if data is None:
        raise ScenarioError(source, ["the file is empty; a scenario is a mapping of keys"])
    if not isinstance(data, dict):
        raise ScenarioError(
            source, [f"the top level must be a mapping of keys, not a {type(data).__name__}"]
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, [_describe(err) for err in exc.errors()]) from None
    except RecursionError:
        raise ScenarioError(source, ["nested too deeply to validate"]) from None


def load_scenario_file(path: Path) -> Scenario:
    """Read, parse and validate one scenario file (references to other files are not checked)."""
    return validate_scenario(parse_yaml(read_scenario_text(path), str(path)), str(path))


# --------------------------------------------------------------------------------------------
# Error messages
# --------------------------------------------------------------------------------------------


def _format_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: Any) -> str:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    kind: str = err["type"]
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        hint = ""
        if allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = (f" (did you mean {close[0]!r}?)" if close else "") + (
                f"; allowed keys: {', '.join(allowed)}"
            )
        return f"{_format_path(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{_format_path(loc)}: required key is missing"
    if kind.startswith("value_error") or kind == "assertion_error":
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return f"{_format_path(loc) or 'scenario'}: {msg}"
    text = msg[0].lower() + msg[1:] if msg else kind
    return f"{_format_path(loc)}: {text} (got {_short(err.get('input'))})"


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    """Field names of the schema model found at ``loc``, or [] when it is not a model."""
    model = _model_at(Scenario, loc)
    return list(model.model_fields) if model is not None else []


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """Walk the schema's annotations along an error location (fields, list indices, dict keys)."""
    annotation: Any = root
    for part in loc:
        annotation = _strip_optional(annotation)
        origin = typing.get_origin(annotation)
        if origin is list:
            annotation = typing.get_args(annotation)[0]  # ``part`` is the index
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]  # ``part`` is the key
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        else:
            return None
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
