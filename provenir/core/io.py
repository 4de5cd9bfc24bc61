"""Atomic writes: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


def local_path(location: str | Path) -> str | None:
    """``location`` as a local path (a ``file://`` prefix stripped), or ``None`` for another URI."""
    text = str(location)
    if text.startswith("file://"):
        return text[len("file://"):]
    return None if "://" in text else text


def check_output_outside_inputs(output: str | Path, inputs: Iterable[str | Path], option: str = "--out") -> None:
    """Refuse an output folder that is an input, lies inside one, or holds one: replacing or
    filling it would delete or overwrite the data about to be read (local paths only).

    Raises:
        DataError: naming the option, the output and the input it overlaps.
    """
    from provenir.core.errors import DataError

    out_local = local_path(output)
    if out_local is None:
        return
    out = Path(out_local).resolve()
    for given in inputs:
        source_local = local_path(given)
        if source_local is None:
            continue
        source = Path(source_local).resolve()
        if source == out or out in source.parents or source in out.parents:
            raise DataError(
                f"{option} {output}: the output folder overlaps the input {given}; choose a folder "
                "outside the inputs (writing there would delete or overwrite the data being read)"
            )


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any exception (or a crash) before the rename, ``path`` keeps its old content and the
    temp file is removed (a hard kill can leave a ``.name.*.tmp`` file behind, never a torn
    ``path``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
