"""Atomic file and directory writes: a crash mid-save never leaves a half-written artifact behind."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OWNED = ".tinypretrain"  # marks a folder atomic_dir wrote, which it may later replace


def check_replaceable(target: str | Path) -> None:
    """Refuse (ValueError) a ``target`` that atomic_dir must not replace: a file, or a non-empty folder it did not
    write."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is an existing file; pass a folder path.")
    if target.is_dir() and any(target.iterdir()) and not (target / OWNED).exists():
        names = ", ".join(sorted(p.name for p in target.iterdir())[:5])
        raise ValueError(f"{target} already holds files tinypretrain did not write ({names}); pick an empty or new folder.")


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target``, which must be absent, empty, or an
    earlier atomic_dir result (``check_replaceable``)."""
    target = Path(target)
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir(0o777)  # the umask applies, as for any folder (mkdtemp would make it 0700)
    try:
        yield tmp
        (tmp / OWNED).write_text("written by tinypretrain; it may replace this folder\n")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (same suffix, so format readers accept it) for the caller to write; on
    success it replaces ``path`` with ``os.replace``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``, with the permissions open() gives."""
    with atomic_path(path) as tmp:
        # Mode 0666 with the umask applied by the kernel: the permissions open() gives (mkstemp would make 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def open_file_mode(folder: str | Path) -> int:
    """The permissions ``open()`` gives a new file in ``folder`` (0666 less the umask), found by creating one rather
    than by the umask dance (set, restore), which races with other threads creating files."""
    probe = Path(folder) / f".tinypretrain-mode-{os.getpid()}-{secrets.token_hex(4)}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        return probe.stat().st_mode & 0o777
    finally:
        probe.unlink()


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``atomic_write_text`` of pretty-printed JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
