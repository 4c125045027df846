"""Keep a pass over a memory-mapped corpus from piling up in RSS.

datasets memory-maps its Arrow cache files, and every page a pass reads stays resident in the process, so tokenizing
or packing a corpus once leaves the whole corpus counted in RSS (benchmarks/data_scale.py: +0.45 GB at 500k stories).
The pages are clean copies of the file, so dropping them after each batch costs nothing but a re-read if they are
touched again, and memory stays flat however large the corpus.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
from collections.abc import Callable, Iterable
from typing import Any

from datasets import Dataset


def release_mapped_pages(files: Iterable[str]) -> None:
    """Drop this process's resident pages of its read-only memory maps of ``files``.

    Only read-only mappings are touched, so content never changes: the kernel re-reads a page from the file on its
    next access. A no-op where the platform has no ``/proc/self/maps`` or ``madvise`` (anything but Linux).
    """
    wanted = {os.path.realpath(f) for f in files}
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if not wanted or advice is None:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8") as handle:
            maps = handle.read().splitlines()
    except OSError:
        return
    madvise = _libc().madvise
    for line in maps:
        fields = line.split(maxsplit=5)  # address perms offset dev inode path
        if len(fields) == 6 and fields[5] in wanted and "w" not in fields[1]:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            madvise(start, end - start, advice)


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def cache_files(ds: Dataset) -> list[str]:
    """The Arrow files backing ``ds`` (empty for an in-memory dataset)."""
    return [f["filename"] for f in ds.cache_files]


def releasing(fn: Callable[..., Any], ds: Dataset) -> Callable[..., Any]:
    """``fn`` for ``ds.map``/``ds.filter`` that releases ``ds``'s mapped pages after each call (picklable, so it
    works with ``num_proc``)."""
    return functools.partial(_call_and_release, fn, cache_files(ds))


def _call_and_release(fn: Callable[..., Any], files: list[str], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    release_mapped_pages(files)
    return result
