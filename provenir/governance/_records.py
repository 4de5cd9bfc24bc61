"""A record's string leaves, with their field paths, and rebuilding a record with leaves replaced.

Every string anywhere in a record is a leaf: dict values, list items, nested to any depth, plus
integers long enough to hold a number worth scanning (a phone or card stored as a number). Paths
read like the record: ``messages[2].content``, ``meta.contacts[0]``. Leaves are visited in a fixed
order (dict insertion order, list order), so a leaf's index is stable between scanning and masking.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 256
_MIN_SCANNED_INT = 1_000_000


class RecordProblem(Exception):
    """A record that cannot be scanned whole (not an object, nested too deeply)."""


def leaves(record: Any) -> tuple[list[str], str | None]:
    """``(values, problem)``: every scannable leaf of ``record``, in a fixed order.

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
    _walk_values(record, 0, values, problems)
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


def _walk_values(node: Any, depth: int, values: list[str], problems: list[str]) -> None:
    if depth >= MAX_DEPTH:
        if not problems:
            problems.append(f"nested deeper than {MAX_DEPTH} levels; deeper values were not scanned")
        return
    for value in (node.values() if isinstance(node, dict) else node):
        cls = type(value)
        if cls is str:
            values.append(value)
        elif cls is dict or cls is list or cls is tuple:
            _walk_values(value, depth + 1, values, problems)
        elif isinstance(value, (dict, list, tuple)):
            _walk_values(value, depth + 1, values, problems)
        else:
            text = _leaf_text(value)
            if text is not None:
                values.append(text)
            elif not (value is None or cls in (int, float, bool)) and not problems:
                problems.append(f"a value of type {cls.__name__} is not JSON; not scanned")


def leaf_paths(record: Any) -> list[str]:
    """Field paths (``messages[2].content``) of the leaves :func:`leaves` returns, same order."""
    if not isinstance(record, dict):
        return [""] if isinstance(record, str) else []
    paths: list[str] = []
    _walk_paths(record, "", 0, paths)
    return paths


def _walk_paths(node: Any, prefix: str, depth: int, paths: list[str]) -> None:
    if depth >= MAX_DEPTH:
        return
    is_dict = isinstance(node, dict)
    for key, value in (node.items() if is_dict else enumerate(node)):
        path = (f"{prefix}.{key}" if prefix else str(key)) if is_dict else f"{prefix}[{key}]"
        if isinstance(value, (dict, list, tuple)):
            _walk_paths(value, path, depth + 1, paths)
        elif type(value) is str or _leaf_text(value) is not None:
            paths.append(path)


def replace_leaves(record: Any, replacements: dict[int, str]) -> Any:
    """A copy of ``record`` where leaf number ``i`` (in :func:`leaves` order) becomes ``replacements[i]``.

    The structure (keys, nesting, list lengths, untouched values) is kept exactly.
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
    is_dict = isinstance(node, dict)
    items = node.items() if is_dict else enumerate(node)
    out: Any = {} if is_dict else []
    for key, value in items:
        cls = type(value)
        if cls is str or (not isinstance(value, (dict, list, tuple)) and _leaf_text(value) is not None):
            index = counter[0]
            counter[0] += 1
            new: Any = replacements.get(index, value)
        elif isinstance(value, (dict, list, tuple)):
            new = _rebuild(value, depth + 1, replacements, counter)
        else:
            new = value
        if is_dict:
            out[key] = new
        else:
            out.append(new)
    return out
