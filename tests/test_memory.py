"""Reading a memory-mapped dataset leaves no resident pages behind, and never changes what is read."""

import sys

import numpy as np
import pyarrow.compute as pc
import pytest
from datasets import Dataset

import tinypretrain as tp
from tinypretrain.utils.memory import cache_files, release_mapped_pages, releasing

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="page release is Linux-only (a no-op elsewhere)")


def _resident_kib(path: str) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8") as handle:
        for line in handle:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = len(head) == 6 and head[5] == path
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


@pytest.fixture
def mapped(tmp_path):
    rows = np.random.default_rng(0).integers(0, 50_000, size=(4_000, 512), dtype=np.int32)
    Dataset.from_dict({"input_ids": rows}).save_to_disk(tmp_path / "ds")
    return Dataset.load_from_disk(tmp_path / "ds"), rows


def test_a_full_pass_then_release_leaves_no_pages_and_the_data_unchanged(mapped):
    ds, rows = mapped
    (path,) = cache_files(ds)
    total = sum(int(pc.sum(pc.list_flatten(b["input_ids"])).as_py()) for b in ds.with_format("arrow").iter(500))
    assert total == int(rows.sum())
    assert _resident_kib(path) > 4_000  # 8 MB of tokens read through the map
    release_mapped_pages([path])
    assert _resident_kib(path) < 100
    again = np.stack(ds.with_format("numpy")["input_ids"])
    assert np.array_equal(again, rows)


def test_packing_a_mapped_dataset_keeps_it_unresident_and_equals_pack_sequences(mapped):
    ds, rows = mapped
    (path,) = cache_files(ds)
    packed = tp.pack_dataset(ds, 1000, chunk_rows=500)
    assert _resident_kib(path) < 600  # at most about one chunk's pages at a time
    assert np.array_equal(np.array(packed["input_ids"]), tp.pack_sequences(rows.tolist(), 1000))


def test_releasing_map_function_gives_the_same_rows(mapped):
    ds, rows = mapped
    doubled = ds.map(releasing(lambda b: {"twice": [[2 * t for t in r] for r in b["input_ids"]]}, ds), batched=True)
    assert _resident_kib(cache_files(ds)[0]) < 600
    assert np.array_equal(np.stack(doubled.with_format("numpy")["twice"]), 2 * rows)


def test_in_memory_datasets_and_missing_files_are_a_no_op():
    ds = Dataset.from_dict({"x": [1, 2, 3]})
    assert cache_files(ds) == []
    release_mapped_pages([])
    release_mapped_pages(["/no/such/file.arrow"])
    assert ds["x"] == [1, 2, 3]
