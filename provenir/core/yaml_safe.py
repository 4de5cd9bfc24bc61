"""The one YAML loader Provenir uses: safe constructors, bounded size, depth and alias expansion.

Every YAML file or value Provenir reads (run configs, eval configs, lm-eval task files, model-card
front matter, ``--set`` values, stored ``config.yaml`` files) goes through :func:`load_yaml`. It is
``yaml.safe_load`` (libyaml's parser where PyYAML has it, with PyYAML's ``SafeConstructor``) behind
a pass over the document's parse events that enforces the limits below before anything is built,
so a hostile document is one :class:`ConfigError` naming the source, and the line where YAML gives
one, within a fraction of a second::

    bomb.yaml:9: invalid YAML: aliases expand to more than 100000 values (a "billion laughs"
    document?); write the values out, or use fewer aliases

The limits, each a keyword argument with the default below:

* ``max_bytes`` (:data:`MAX_BYTES`): a larger file is refused before it is read.
* ``max_depth`` (:data:`MAX_DEPTH`): nesting of lists and mappings, counted through aliases.
* ``max_aliases`` (:data:`MAX_ALIASES`): ``*alias`` references in one document.
* ``max_nodes`` (:data:`MAX_NODES`): values in the document once every alias is expanded. A
  "billion laughs" file is a few lines of nested aliases that expand to 10⁹ strings; it is refused
  while it is parsed, before anything is built.

Only standard YAML tags load; ``!!python/object`` and every other language-specific tag is refused
(``keep_tags`` names extra local tags, such as lm-eval's ``!function``, to load as :class:`Tagged`).
An alias of the node that contains it (a recursive document) is refused too.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from provenir.core.errors import ConfigError

__all__ = [
    "MAX_ALIASES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "Tagged",
    "UnsafeYAMLError",
    "compose_yaml",
    "load_yaml",
    "read_yaml_text",
]

#: Largest YAML document read, in bytes of UTF-8 (configs are a few KiB).
MAX_BYTES = 1024 * 1024
#: Deepest nesting of lists and mappings.
MAX_DEPTH = 64
#: Most ``*alias`` references in one document.
MAX_ALIASES = 1000
#: Most values in one document with every alias expanded.
MAX_NODES = 100_000


class UnsafeYAMLError(ConfigError):
    """A YAML document broke a safety limit (size, depth, aliases) or used a refused tag.

    A :class:`ConfigError`; raised apart from plain syntax errors so that readers which tolerate
    malformed YAML (a model card's front matter) still refuse hostile YAML.
    """


class Tagged(NamedTuple):
    """A value carrying one of the ``keep_tags`` given to :func:`load_yaml`."""

    tag: str
    value: Any


class _LimitError(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


_SAFE_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None)


def _construct_tagged(loader: Any, suffix: str, node: Any) -> Tagged:
    if isinstance(node, yaml.ScalarNode):
        return Tagged(node.tag, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return Tagged(node.tag, loader.construct_sequence(node, deep=True))
    return Tagged(node.tag, loader.construct_mapping(node, deep=True))


class _PureLoader(yaml.SafeLoader):
    """``SafeLoader``; its scanner refuses deep brackets before it looks ahead through them."""

    max_flow_level = MAX_DEPTH

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= self.max_flow_level:
            problem = f"nested more than {self.max_flow_level} levels deep"
            raise _LimitError(problem, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


# Tags reach these only when the limit pass let them through, i.e. those in ``keep_tags``.
_PureLoader.add_multi_constructor("!", _construct_tagged)
if yaml.__with_libyaml__:  # libyaml's parser with the same SafeConstructor: about 10x faster

    class _CLoader(yaml.CSafeLoader):
        pass

    _CLoader.add_multi_constructor("!", _construct_tagged)
    _LOADER: type = _CLoader
else:  # pragma: no cover - PyYAML wheels ship libyaml
    _LOADER = _PureLoader


def _check_limits(
    text: str, *, max_depth: int, max_aliases: int, max_nodes: int, keep_tags: Collection[str]
) -> None:
    """Walk the document's events (nothing is built) and raise :class:`_LimitError` at the first
    limit crossed: depth, aliases and values are counted as if every alias were expanded."""
    parser = _LOADER(text)
    if isinstance(parser, _PureLoader):  # pragma: no cover - without libyaml
        parser.max_flow_level = max_depth
    keep = frozenset(keep_tags)
    nodes = aliases = depth = 0
    # one frame per open list or mapping: [anchor, values before it, deepest level reached in it]
    stack: list[list[Any]] = []
    extent: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels of nesting)

    def count(values: int, mark: Any) -> None:
        nonlocal nodes
        nodes += values
        if nodes > max_nodes:
            raise _LimitError(
                f"aliases expand to more than {max_nodes} values (a \"billion laughs\" document?); "
                "write the values out, or use fewer aliases"
                if aliases else f"more than {max_nodes} values", mark)

    def reach(level: int, mark: Any) -> None:
        if level > max_depth:
            raise _LimitError(f"nested more than {max_depth} levels deep", mark)
        if stack and level > stack[-1][2]:
            stack[-1][2] = level

    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                extent = {}
            elif isinstance(event, yaml.AliasEvent):
                if any(frame[0] == event.anchor for frame in stack):
                    raise _LimitError(
                        f"the alias *{event.anchor} is inside the value it names (a recursive "
                        "document); write the value out", event.start_mark)
                aliases += 1
                if aliases > max_aliases:
                    raise _LimitError(f"more than {max_aliases} aliases; write the values out",
                                      event.start_mark)
                values, levels = extent.get(event.anchor, (1, 0))
                count(values, event.start_mark)
                reach(depth + levels, event.start_mark)
            elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
                tag = event.tag
                if tag not in (None, "!") and tag not in _SAFE_TAGS and tag not in keep:
                    raise _LimitError(
                        f"the tag {_short_tag(tag)} is not allowed: Provenir loads plain YAML only "
                        "(mappings, lists, strings, numbers, booleans, null)", event.start_mark)
                count(1, event.start_mark)
                if isinstance(event, yaml.ScalarEvent):
                    if event.anchor is not None:
                        extent[event.anchor] = (1, 0)
                else:
                    depth += 1
                    reach(depth, event.start_mark)
                    stack.append([event.anchor, nodes - 1, depth])
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, before, deepest = stack.pop()
                if anchor is not None:
                    extent[anchor] = (nodes - before, deepest - depth + 1)
                depth -= 1
                if stack and deepest > stack[-1][2]:
                    stack[-1][2] = deepest
    finally:
        parser.dispose()


def _short_tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


def read_yaml_text(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES, kind: str = "YAML file"
) -> str:
    """A YAML file's text, refused before reading when it is over ``max_bytes``.

    ``kind`` names the file in errors (``config file`` gives ``x.yaml: config file not found``).

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, or too large.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a {kind}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {kind} ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise UnsafeYAMLError(_too_large(str(path), max_bytes))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _too_large(source: str, max_bytes: int) -> str:
    return (f"{source}: YAML larger than {max_bytes} bytes; "
            "Provenir reads config files up to that size")


def _text(
    text_or_path: str | os.PathLike[str], source: str | None, max_bytes: int
) -> tuple[str, str]:
    if isinstance(text_or_path, os.PathLike):
        return read_yaml_text(text_or_path, max_bytes=max_bytes), source or str(text_or_path)
    if source is None:
        raise TypeError("load_yaml(text) needs source=: the file or flag the text came from")
    text = text_or_path
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise UnsafeYAMLError(_too_large(source, max_bytes))
    return text, source


def _error(exc: BaseException, source: str, text: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    # a one-line value (``--set KEY=VALUE``) has no line worth naming
    where = f"{source}:{mark.line + 1}" if mark is not None and "\n" in text else source
    if isinstance(exc, yaml.YAMLError):
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if "duplicate anchor" in str(context):
            first = getattr(exc, "context_mark", None)
            problem = "an anchor is defined twice" + (
                f" (first on line {first.line + 1})" if first is not None else "")
        elif "maximum nesting depth" in problem:  # libyaml's own cap, met while scanning ahead
            problem, context = "nested too deep", None
        elif context and isinstance(context, str):
            problem = f"{problem} ({context})"
        if problem.startswith("could not determine a constructor for the tag"):
            problem = "the tag is not allowed: Provenir loads plain YAML only"
    elif isinstance(exc, UnicodeError):
        where_in = getattr(exc, "start", "?")
        problem = f"not valid Unicode text ({getattr(exc, 'reason', exc)} at character {where_in})"
    elif "integer string conversion" in str(exc):
        problem = "an integer with more digits than Python converts; quote it to keep it as text"
    else:
        problem = str(exc) or type(exc).__name__
    problem = " ".join(str(problem).split())
    unsafe = isinstance(exc, (_LimitError, RecursionError)) or problem == "nested too deep" or (
        isinstance(exc, ValueError) and not isinstance(exc, UnicodeError))
    kind = UnsafeYAMLError if unsafe else ConfigError
    return kind(f"{where}: invalid YAML: {problem}")


def _safe_loader(text: str, max_depth: int, max_aliases: int, max_nodes: int,
                 keep_tags: Collection[str]) -> Any:
    """A safe loader over ``text``, once the limit pass has accepted it."""
    _check_limits(text, max_depth=max_depth, max_aliases=max_aliases, max_nodes=max_nodes,
                  keep_tags=keep_tags)
    return _LOADER(text)


def load_yaml(
    text_or_path: str | os.PathLike[str],
    *,
    source: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_aliases: int = MAX_ALIASES,
    max_nodes: int = MAX_NODES,
    keep_tags: Collection[str] = (),
) -> Any:
    """Parse one YAML document with safe constructors and the limits in the module docstring.

    Args:
        text_or_path: YAML text (a ``str``) or a file (a :class:`~pathlib.Path`).
        source: what errors name: the file, or the flag the text came from (``--set peft.rank``);
            required for text, the path by default.
        max_bytes: largest document, in UTF-8 bytes.
        max_depth: deepest nesting of lists and mappings.
        max_aliases: most ``*alias`` references.
        max_nodes: most values once aliases are expanded.
        keep_tags: local tags (``"!function"``) loaded as :class:`Tagged` instead of refused.

    Returns:
        The document's value (``None`` for an empty document).

    Raises:
        ConfigError: one line, ``SOURCE[:LINE]: invalid YAML: …``; an :class:`UnsafeYAMLError`
            when a limit or a refused tag is the cause.

    Example:
        >>> load_yaml("rank: 8\\nmodules: [q, v]\\n", source="example.yaml")
        {'rank': 8, 'modules': ['q', 'v']}
    """
    text, source = _text(text_or_path, source, max_bytes)
    try:
        loader = _safe_loader(text, max_depth, max_aliases, max_nodes, keep_tags)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise _error(exc, source, text) from None


def compose_yaml(
    text_or_path: str | os.PathLike[str],
    *,
    source: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_aliases: int = MAX_ALIASES,
    max_nodes: int = MAX_NODES,
    keep_tags: Collection[str] = (),
) -> yaml.Node | None:
    """The document's node graph (with line marks), under the same limits as :func:`load_yaml`."""
    text, source = _text(text_or_path, source, max_bytes)
    try:
        loader = _safe_loader(text, max_depth, max_aliases, max_nodes, keep_tags)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise _error(exc, source, text) from None
