import os
import stat

import pytest

from tinypretrain.utils.io import atomic_dir, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "run.json"
    atomic_write_text(path, "old")
    atomic_write_json(path, {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary files left


def test_atomic_dir_keeps_the_old_folder_when_writing_fails(tmp_path):
    target = tmp_path / "tok"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("killed mid-save")
    assert sorted(p.name for p in target.iterdir()) == [".tinypretrain", "a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [".tinypretrain", "c.txt"]


def test_atomic_dir_never_replaces_what_it_did_not_write(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    (tmp_path / "file").write_text("keep")
    for target, message in ((tmp_path / "notes", "did not write \\(mine.txt\\)"), (tmp_path / "file", "existing file")):
        with pytest.raises(ValueError, match=message):
            with atomic_dir(target) as tmp:
                (tmp / "x").write_text("new")
    assert (tmp_path / "notes" / "mine.txt").read_text() == (tmp_path / "file").read_text() == "keep"
