"""Loading text corpora: local files named by split (``.txt`` with ``<|endoftext|>``, ``.jsonl``, ``.json``,
``.parquet``) or a hub dataset, checked to hold text. A bad file is named, with its line where there is one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from datasets import (
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    ReadInstruction,
    Value,
    concatenate_datasets,
    load_dataset,
)
from datasets.exceptions import DatasetGenerationError

from ..utils.hub import looks_local, require_hub

EOT = "<|endoftext|>"
# How split names in file names map to dataset splits (TinyStoriesV2 ships `...-valid.txt`).
_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "test": "test",
}
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_SUFFIXES = (".txt", *_BUILDERS)


# ----------------------------------------------------------------------------------------------------------- loading
SHARD_BYTES = 1 << 20  # a streamed .txt file is read in shards of this size: a resume skips whole shards unread
_BOM = b"\xef\xbb\xbf"  # a byte-order mark is not text


def read_eot_text(paths: Sequence[str]) -> Iterator[dict[str, str]]:
    """Yield ``{"text": record}`` from ``.txt`` files whose records are separated by ``<|endoftext|>``.

    A file with no separator in its first MiB is read as one record per non-empty line (the plain-text
    convention). Reads a MiB at a time, so files larger than memory are fine.
    """
    return read_text_ranges(text_ranges(paths, shard_bytes=None))


def text_ranges(paths: Sequence[str], shard_bytes: int | None) -> list[tuple[str, int, int, str]]:
    """``(path, start, end, separator)`` shards of ``.txt`` files, ``shard_bytes`` each (None: a file each). A shard
    holds the records that start in its byte range, so a stream over shards can resume at one without reading the
    ones before it (datasets skips whole shards by index)."""
    ranges = []
    for path in paths:
        size, separator = os.path.getsize(path), _separator(path)
        step = shard_bytes or max(size, 1)
        ranges += [(path, start, min(start + step, size), separator) for start in range(0, max(size, 1), step)]
    return ranges


def read_text_ranges(ranges: Sequence[tuple[str, int, int, str]]) -> Iterator[dict[str, str]]:
    """Yield ``{"text": record}`` for the records of each ``text_ranges`` shard, in order."""
    for path, start, end, separator in ranges:
        for text in _records(path, start, end, separator.encode()):
            yield {"text": text}


def _separator(path: str) -> str:
    with open(path, "rb") as handle:
        return EOT if EOT.encode() in handle.read(1 << 20) else "\n"


def _records(path: str, start: int, end: int, separator: bytes) -> Iterator[str]:
    """The non-blank records of ``path`` that start in ``[start, end)``: the file's first one (at 0, after any
    byte-order mark) and each one right after a separator."""
    chunk = 1 << 20
    with open(path, "rb") as handle:
        if start == 0:
            base = len(_BOM) if handle.read(len(_BOM)) == _BOM else 0
            begin: int | None = 0
        else:  # the first record here follows the first separator that ends at or after start
            base, begin = max(0, start - len(separator)), None
        handle.seek(base)
        buffer, owned = handle.read(chunk), start == 0
        while True:
            found = buffer.find(separator, begin or 0)
            if found < 0:
                more = handle.read(chunk)
                if more:  # keep the unfinished record (or a separator's head) and read on
                    keep = begin if begin is not None else max(0, len(buffer) - len(separator) + 1)
                    buffer, base = buffer[keep:] + more, base + keep
                    begin = None if begin is None else 0
                    continue
                if begin is None:
                    return
                found = len(buffer)  # the file's last record has no separator after it
            if begin is not None:
                if not owned and base + begin >= end:
                    return
                owned = False
                text = _decode(buffer[begin:found], path, base + begin)
                if text.strip():
                    yield text.rstrip("\n") if separator == b"\n" else text.strip()
            if found == len(buffer):
                return
            begin = found + len(separator)


def _decode(raw: bytes, path: str, offset: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (bad byte at offset {offset + err.start}); re-encode it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path} > fixed.txt`."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as text mode reads them


def has_text(text: object) -> bool:
    """Whether ``text`` is a string with something besides whitespace (blank texts train and score only an EOS)."""
    return isinstance(text, str) and bool(text.strip())


def _split_of(path: Path) -> str | None:
    for word in re.split(r"[-_.]", path.name.lower()):
        match = re.fullmatch(r"(train|validation|valid|val|test)\d*", word)
        if match:
            return _SPLIT_NAMES[match.group(1)]
    return None


def _local_files(root: Path) -> dict[str, list[str]]:
    if root.is_file():
        return {"train": [str(root)]}
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
    by_split: dict[str, list[str]] = {}
    for path in files:
        split = _split_of(path)
        if split is not None:
            by_split.setdefault(split, []).append(str(path))
    if not by_split and files:
        by_split["train"] = [str(p) for p in files]
    unclaimed = [p.name for p in files if str(p) not in {f for names in by_split.values() for f in names}]
    if unclaimed:
        logging.getLogger("tinypretrain").warning(
            "%s: no split claims %s (splits come from file names: train*, valid*/validation*, test*); rename "
            "them to use them.", root, ", ".join(unclaimed))
    if not by_split:
        raise ValueError(
            f"No readable data files in {root}: expected {', '.join(_SUFFIXES)} files, named by split "
            f"(train*, valid*/validation*, test*)."
        )
    return by_split


def _load_local_split(files: list[str], streaming: bool) -> Dataset | IterableDataset:
    suffixes = {Path(f).suffix for f in files}
    if len(suffixes) > 1:
        raise ValueError(f"Files of one split must share a format, got {sorted(suffixes)}: {files}.")
    suffix = suffixes.pop()
    if suffix not in _SUFFIXES:
        raise ValueError(f"Unsupported file type {suffix!r} ({files[0]}); use one of {', '.join(_SUFFIXES)}.")
    if suffix == ".txt":
        features = Features({"text": Value("string")})
        if next(read_eot_text(files), None) is None:  # datasets cannot build a split from zero examples
            empty = Dataset.from_dict({"text": []}, features=features)
            return empty.to_iterable_dataset() if streaming else empty
        if streaming:
            return IterableDataset.from_generator(read_text_ranges, features=features,
                                                  gen_kwargs={"ranges": text_ranges(files, SHARD_BYTES)})
        # The cache key must change when a file does; datasets would otherwise hash only the paths.
        stamps = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
        fingerprint = hashlib.sha256(repr(stamps).encode()).hexdigest()[:32]
        try:
            return Dataset.from_generator(
                read_eot_text, features=features, gen_kwargs={"paths": files}, fingerprint=fingerprint
            )
        except DatasetGenerationError as err:
            if isinstance(err.__cause__, ValueError):  # our own message (e.g. not UTF-8), not datasets' wrapper
                raise err.__cause__ from None
            raise
    kwargs = {"encoding": "utf-8-sig"} if _BUILDERS[suffix] == "json" else {}
    try:
        return load_dataset(_BUILDERS[suffix], data_files=files, split="train", streaming=streaming, **kwargs)
    except DatasetGenerationError:
        problem = _json_problem(files, text_column=None) if _BUILDERS[suffix] == "json" else None
        if problem:
            raise ValueError(problem) from None
        raise


def _json_problem(files: list[str], text_column: str | None) -> str | None:
    """The first thing wrong in these JSON/JSON Lines files, named with the file and 1-based line (or item): a line
    that is not JSON, a record that is not an object, a ``text_column`` that is not a string, or a ``.json`` that is
    an object of columns; None if nothing is."""
    for file in files:
        text = Path(file).read_text(encoding="utf-8-sig", errors="replace")
        if file.endswith(".json"):
            try:
                records = json.loads(text)
            except json.JSONDecodeError as err:
                return (f"{file} line {err.lineno} is not valid JSON ({err.msg}); fix it, or use one object per line "
                        "(.jsonl).")
            if isinstance(records, dict):
                return (f"{file} holds one JSON object of columns; a .json file must hold a list of records "
                        '([{"text": "..."}, ...]), or write one object per line in a .jsonl file.')
            rows = [(f"item {i}", r) for i, r in enumerate(records if isinstance(records, list) else [records], 1)]
        else:
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as err:
                    return f"{file} line {number} is not valid JSON ({err.msg}); fix or remove that line."
        for where, record in rows:
            if not isinstance(record, dict):
                return f"{file} {where} is {type(record).__name__}, not a JSON object such as {{\"text\": \"...\"}}."
            if text_column in record and not isinstance(record[text_column], str):
                value = record[text_column]
                return (f"{file} {where}: {text_column!r} holds {value!r:.40} ({type(value).__name__}), not a string; "
                        "quote it, or point text_column at a text column.")
    return None


def _select(dsd: dict[str, Dataset | IterableDataset], split: str, files: dict[str, list[str]] | None = None
            ) -> Dataset | IterableDataset:
    if "%" in split and any(isinstance(ds, IterableDataset) for ds in dsd.values()):
        raise ValueError(f"A stream has no length, so {split!r} cannot be a percentage; use rows, e.g. train[:10000].")
    instructions = ReadInstruction.from_spec(split)
    names = {name for name in re.findall(r"([\w-]+)(?:\[[^\]]*\])?", split)}
    missing = names - dsd.keys()
    if missing:
        raise ValueError(f"Split {sorted(missing)} not found; available splits: {sorted(dsd)}.")
    empty = sorted(name for name in names if _num_rows(dsd[name]) == 0)
    if empty:
        named = ", ".join(f for name in empty for f in (files or {}).get(name, []))
        raise ValueError(f"Split {empty} is empty: its files{f' ({named})' if named else ''} hold no texts. Add data "
                         "or pick another split.")
    parts = []
    for piece in instructions.to_absolute({name: _num_rows(dsd[name]) for name in names}):
        ds = dsd[piece.splitname]
        if isinstance(ds, IterableDataset):
            parts.append(ds.skip(piece.from_).take(piece.to - piece.from_))
        else:
            parts.append(ds.select(range(piece.from_, piece.to)))
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _num_rows(ds: Dataset | IterableDataset) -> int:
    if isinstance(ds, IterableDataset):
        # Slicing a stream by percentage would need a full pass; absolute slices work without one.
        return 1 << 62
    return len(ds)


def check_text_column(ds: Dataset | IterableDataset, text_column: str, json_files: Sequence[str] = ()) -> None:
    """Raise a ``ValueError`` naming the fix when ``text_column`` is missing or does not hold strings; for ``ds`` read
    from ``json_files``, a column of mixed types or an object of columns names the file and record at fault."""
    features = ds.features
    if features is None:
        return
    if text_column not in features:
        raise ValueError(
            f"Column {text_column!r} not found; the dataset has {list(features)}. Pass text_column=<one of those>."
        )
    feature = features[text_column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        # mixed types (a Json feature) or an object of columns (a List); a plain numeric column is the message below
        if json_files and not isinstance(feature, Value) and (problem := _json_problem(list(json_files), text_column)):
            raise ValueError(problem)
        raise ValueError(
            f"Column {text_column!r} holds {feature}, not text. Point text_column at a string column "
            f"or convert it first (e.g. ds.map(lambda b: {{'text': [str(x) for x in b[{text_column!r}]]}}))."
        )


def load_text_dataset(
    source: str | Path,
    split: str | None = "train",
    *,
    text_column: str | None = "text",
    streaming: bool = False,
    **load_kwargs: Any,
) -> Dataset | IterableDataset | DatasetDict | IterableDatasetDict:
    """Load a text corpus from the hub or from local files, checked to have a string ``text_column``.

    ``source`` is a hub dataset name (``noanabeshima/TinyStoriesV2``), a file (``.txt`` with ``<|endoftext|>``
    separators, ``.jsonl``, ``.json``, ``.parquet``) or a directory whose files are named by split
    (``train*``, ``valid*``/``validation*``, ``test*``; ``valid`` becomes ``validation``). ``split`` takes slices
    like ``"train[:10%]"``; ``split=None`` returns every split as a ``DatasetDict``. ``streaming=True`` gives an
    ``IterableDataset`` for corpora larger than the disk cache (row slices only: a stream has no length).
    ``load_kwargs`` go to ``datasets.load_dataset`` on the hub path. ``text_column=None`` leaves the columns
    unchecked, for callers that check their own (``check_text_column``).
    """
    path = Path(source).expanduser()
    if path.exists():
        by_split = _local_files(path)
        splits = {name: _load_local_split(files, streaming) for name, files in by_split.items()}
        ds = (IterableDatasetDict if streaming else DatasetDict)(splits)
        if split is not None:
            ds = _select(ds, split, by_split)
        json_files = [f for files in by_split.values() for f in files if f.endswith((".json", ".jsonl"))]
    elif looks_local(str(source)) or path.suffix in _SUFFIXES:
        raise ValueError(f"{source} does not exist. Pass an existing file or directory, or a hub dataset name.")
    else:
        require_hub(str(source), "dataset", "dataset")
        ds = load_dataset(str(source), split=split, streaming=streaming, **load_kwargs)
        json_files = []
    if text_column is not None:
        for part in ds.values() if split is None else [ds]:
            check_text_column(part, text_column, json_files)
    return ds


