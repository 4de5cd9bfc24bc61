"""A record's string leaves, with their field paths, and rebuilding a record with leaves replaced.

Every string anywhere in a record is a leaf: dict values, list items, nested to any depth, plus
integers long enough to hold a number worth scanning (a phone or card stored as a number), **and
every string dict key** (``{"contacts": {"ann@x.io": "met at a conference"}}``: the key is
scanned like a value). Leaves are visited in a fixed order: depth first, dict insertion order and
list order, and for each dict entry its key first, then its value's leaves. A leaf's index is
therefore stable between scanning and masking.

Paths read like the record: ``messages[2].content``, ``meta.contacts[0]``. A key leaf's path never
spells the key out: it is ``<key N>``, the key of entry ``N`` (0-based, insertion order) of its
object, e.g. ``contacts.<key 0>`` (top level: ``<key 0>``). When a key itself holds a finding, paths
*through* it say ``<entry N>`` instead of the key (``contacts.<entry 0>``, ``<entry 3>.phone``), so
a report never leaks a key's text.

Masking a key keeps the structure; when two masked keys of one object end up equal (two addresses
both become ``<EMAIL>``), the later ones (in entry order) get ``" #2"``, ``" #3"``, … so that no
entry is lost; a key that was not masked always keeps its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_DEPTH = 256
_MIN_SCANNED_INT = 1_000_000


class RecordProblem(Exception):
    """A record that cannot be scanned whole (not an object, nested too deeply)."""


def leaves(record: Any) -> tuple[list[str], str | None]:
    """``(values, problem)``: every scannable leaf of ``record`` (string keys included), in a fixed order.

    ``problem`` names what could not be scanned (``None`` when everything was); the leaves that
    could be reached are still returned, so a malformed record is reported *and* scanned. Paths
    are not built here (most records are clean); :func:`leaf_paths` gives them, same order.
    """
    values: list[str] = []
    if type(record) is not dict:
        if isinstance(record, str):
            return [record], None
        if not isinstance(record, dict):
            return values, f"expected a JSON object, got {type(record).__name__}"
    problems: list[str] = []
    _walk_dict(record, 0, values, problems)
    return values, (problems[0] if problems else None)


def _leaf_text(value: Any) -> str | None:
    cls = type(value)
    if cls is int:
        return str(value) if abs(value) >= _MIN_SCANNED_INT else None
    if value is None or cls is float or cls is bool:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return str(value)
    return None


def _value(value: Any, depth: int, values: list[str], problems: list[str]) -> None:
    """One value that is not a plain ``str`` (those are appended inline by the walkers)."""
    cls = type(value)
    if cls is dict:
        _walk_dict(value, depth + 1, values, problems)
    elif cls is list or cls is tuple:
        _walk_list(value, depth + 1, values, problems)
    elif isinstance(value, dict):
        _walk_dict(value, depth + 1, values, problems)
    elif isinstance(value, (list, tuple)):
        _walk_list(value, depth + 1, values, problems)
    else:
        text = _leaf_text(value)
        if text is not None:
            values.append(text)
        elif not (value is None or cls in (int, float, bool)) and not problems:
            problems.append(f"a value of type {cls.__name__} is not JSON; not scanned")


def _too_deep(problems: list[str]) -> None:
    if not problems:
        problems.append(f"nested deeper than {MAX_DEPTH} levels; deeper values were not scanned")


def _walk_dict(node: dict, depth: int, values: list[str], problems: list[str]) -> None:
    if depth >= MAX_DEPTH:
        _too_deep(problems)
        return
    append = values.append
    for key, value in node.items():
        if type(key) is str:
            append(key)
        elif isinstance(key, str):
            append(str(key))
        cls = type(value)
        if cls is str:
            append(value)
        elif cls is dict:
            _walk_dict(value, depth + 1, values, problems)
        elif cls is list:
            _walk_list(value, depth + 1, values, problems)
        else:
            _value(value, depth, values, problems)


def _walk_list(node: list | tuple, depth: int, values: list[str], problems: list[str]) -> None:
    if depth >= MAX_DEPTH:
        _too_deep(problems)
        return
    append = values.append
    for value in node:
        cls = type(value)
        if cls is str:
            append(value)
        elif cls is dict:
            _walk_dict(value, depth + 1, values, problems)
        elif cls is list:
            _walk_list(value, depth + 1, values, problems)
        else:
            _value(value, depth, values, problems)


def key_path(prefix: str, position: int) -> str:
    """The path of the key of entry ``position`` of the object at ``prefix`` (never the key's text)."""
    return f"{prefix}.<key {position}>" if prefix else f"<key {position}>"


def entry_path(prefix: str, position: int) -> str:
    """The path of the value of entry ``position`` of the object at ``prefix``, key not spelled out."""
    return f"{prefix}.<entry {position}>" if prefix else f"<entry {position}>"


def leaf_paths(record: Any, hide_key: Callable[[int, str], bool] | None = None) -> list[str]:
    """Field paths (``messages[2].content``, ``contacts.<key 0>``) of the leaves :func:`leaves`
    returns, same order.

    ``hide_key(leaf_index, key)`` says whether a key must not appear in the paths below it (a key
    holding a finding): those paths say ``<entry N>`` instead. Key leaves themselves are always
    ``<key N>``.
    """
    if not isinstance(record, dict):
        return [""] if isinstance(record, str) else []
    paths: list[str] = []
    _walk_paths(record, "", 0, paths, hide_key)
    return paths


def _walk_paths(node: Any, prefix: str, depth: int, paths: list[str],
                hide_key: Callable[[int, str], bool] | None) -> None:
    if depth >= MAX_DEPTH:
        return
    if isinstance(node, dict):
        for position, (key, value) in enumerate(node.items()):
            if isinstance(key, str):
                index = len(paths)
                paths.append(key_path(prefix, position))
                if hide_key is not None and hide_key(index, str(key)):
                    path = entry_path(prefix, position)
                else:
                    path = f"{prefix}.{key}" if prefix else str(key)
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            _path_of_value(value, path, depth, paths, hide_key)
    else:
        for position, value in enumerate(node):
            _path_of_value(value, f"{prefix}[{position}]", depth, paths, hide_key)


def _path_of_value(value: Any, path: str, depth: int, paths: list[str],
                   hide_key: Callable[[int, str], bool] | None) -> None:
    if isinstance(value, (dict, list, tuple)):
        _walk_paths(value, path, depth + 1, paths, hide_key)
    elif type(value) is str or _leaf_text(value) is not None:
        paths.append(path)


def replace_leaves(record: Any, replacements: dict[int, str]) -> Any:
    """A copy of ``record`` where leaf number ``i`` (in :func:`leaves` order) becomes ``replacements[i]``.

    The structure (nesting, list lengths, untouched keys and values) is kept exactly. A replaced key
    that would collide with another key of the same object gets ``" #2"``, ``" #3"``, … (the first
    free one, in entry order; keys that were not replaced keep their names), so no entry is dropped.
    """
    if not replacements:
        return record
    if isinstance(record, str):
        return replacements.get(0, record)
    counter = [0]
    return _rebuild(record, 0, replacements, counter)


def _rebuild(node: Any, depth: int, replacements: dict[int, str], counter: list[int]) -> Any:
    if depth >= MAX_DEPTH:
        return node
    if isinstance(node, dict):
        entries: list[tuple[Any, Any]] = []
        renamed: set[int] = set()  # positions whose key was replaced
        for key, value in node.items():
            if isinstance(key, str):
                index = counter[0]
                counter[0] += 1
                new_key = replacements.get(index, key)
                if new_key != key:
                    renamed.add(len(entries))
                    key = new_key
            entries.append((key, _rebuild_value(value, depth, replacements, counter)))
        if not renamed:
            return dict(entries)
        return _unique_keys(entries, renamed)
    return [_rebuild_value(value, depth, replacements, counter) for value in node]


def _rebuild_value(value: Any, depth: int, replacements: dict[int, str], counter: list[int]) -> Any:
    if type(value) is str or (not isinstance(value, (dict, list, tuple)) and _leaf_text(value) is not None):
        index = counter[0]
        counter[0] += 1
        return replacements.get(index, value)
    if isinstance(value, (dict, list, tuple)):
        return _rebuild(value, depth + 1, replacements, counter)
    return value


def _unique_keys(entries: list[tuple[Any, Any]], renamed: set[int]) -> dict[Any, Any]:
    """Entries as a dict; a replaced key equal to another key gets the first free ``" #n"`` (n ≥ 2)."""
    taken = {key for position, (key, _) in enumerate(entries) if position not in renamed}
    next_number: dict[str, int] = {}  # per masked text, where to look for a free number next
    out: dict[Any, Any] = {}
    for position, (key, value) in enumerate(entries):
        if position in renamed:
            if key in taken:
                n = next_number.get(key, 2)
                while f"{key} #{n}" in taken:
                    n += 1
                next_number[key] = n + 1
                key = f"{key} #{n}"
            taken.add(key)
        out[key] = value
    return out
