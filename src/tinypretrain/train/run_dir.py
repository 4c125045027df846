"""The run folder: its name, one writer at a time (a lock), and replacing an earlier run without ever deleting a file
tinypretrain did not write."""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from ..utils.io import atomic_write_text
from .card import is_unedited_card
from .checkpoint import last_complete_checkpoint

LOCK = ".tinypretrain.lock"
OWNER = ".tinypretrain.lock.owner"  # who holds the lock, for messages only
PREVIOUS = ".previous-run"  # an earlier run being replaced: deleted once the new run has its final model
# What a run writes into its folder; anything else there is the user's and is never moved or deleted.
RUN_FILES = (
    "model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "run.json", "metrics.jsonl", "loss.png", "samples.md",
    "README.md", "trainer_state.json", "checkpoint-*", "runs", ".final", LOCK, OWNER, PREVIOUS,
)


def run_folder(output_dir: str | None, state: PartialState) -> Path:
    """``output_dir``, or a new runs/run-<timestamp>; rank 0 names it and every rank uses that name."""
    name = output_dir or str(Path("runs") / time.strftime("run-%Y%m%d-%H%M%S"))
    if state.num_processes > 1:
        name = broadcast_object_list([name], from_process=0)[0]
    return Path(name).expanduser()


def check_shared(out: Path, state: PartialState, *, save_on_each_node: bool) -> None:
    """Every rank must see the folder rank 0 claimed: they all read its checkpoints on resume (and write their shards
    under FSDP). A rank that sees another folder (a node-local disk, or a relative output_dir from another working
    directory) fails the run at the start, on every rank, instead of hours later at the first resume."""
    if state.num_processes == 1 or save_on_each_node:
        return
    claim = broadcast_object_list([_read_owner(out / OWNER) if state.is_main_process else None], from_process=0)[0]
    seen = gather_object([(state.process_index, socket.gethostname(), _read_owner(out / OWNER) == claim)])
    blind = [f"rank {rank} on {host}" for rank, host, sees in seen if not sees]
    if blind:
        raise ValueError(
            f"output_dir {out} is not shared: {', '.join(blind)} cannot see the run folder rank 0 created. Put it on "
            "storage every node mounts, at an absolute path, or pass --save_on_each_node true for node-local disks."
        )


def _read_owner(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


@contextmanager
def claimed(out: Path, *, main: bool) -> Iterator[None]:
    """The run's hold on ``out`` for the block: the main process locks it; if the run fails with no checkpoint to
    keep, an earlier run it was replacing is put back; a full disk is named with the way to go on."""
    with locked(out) if main else nullcontext():
        finished = False
        try:
            yield
            finished = True
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            # The write that failed may be elsewhere (the datasets cache); name its disk when the error says.
            failed = Path(err.filename or out).resolve()
            where = next(p for p in (failed, *failed.parents) if p.exists())
            raise OSError(
                errno.ENOSPC,
                f"The disk holding {where} is full ({shutil.disk_usage(where).free // 2**20} MiB free). The last "
                f"complete checkpoint is {last_complete_checkpoint(out)}: free space, then resume with "
                "--resume_from_checkpoint true",
            ) from None
        finally:
            if not finished and main and last_complete_checkpoint(out) is None:
                undo_replacement(out)  # the new run failed with nothing to keep: put the old one back


def _is_run_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILES)


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the block: an OS-level lock (``flock``) on ``out/.tinypretrain.lock``, which the kernel
    releases when the process ends however it ends, so a killed run never leaves a stale lock. A second run into the
    same folder fails at once, named from the owner file (PID, host, start time; used for the message only). The lock
    file stays after a run (removing it could let two runs lock two different files); a folder where the run left
    nothing keeps no lock file, and one made here is removed again."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is an existing file; pass a directory path.")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = _take_lock(out / LOCK)
    if fd is None:
        raise ValueError(
            f"output_dir {out} is in use by another run ({_owner_text(out / OWNER)}); wait for it, stop it, or pick "
            "another output_dir."
        )
    try:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_text(out / OWNER, json.dumps(owner))
        yield
    finally:
        (out / OWNER).unlink(missing_ok=True)
        if not any(_is_run_file(p.name) and p.name != LOCK for p in out.iterdir()):  # no run here: leave no trace
            (out / LOCK).unlink()  # still held: a run that opens it now fails, one that comes later makes a new one
            if created:
                with suppress(OSError):  # another run may have just taken the folder
                    out.rmdir()
        os.close(fd)


def _take_lock(path: Path) -> int | None:
    """An open descriptor holding ``path``'s exclusive flock, or None when another process holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was just removed by a run that made it and failed: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was removed (an empty folder's cleanup) between open and flock: lock the new one


def _owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text())
        return f"PID {owner['pid']} on {owner['host']}, since {owner['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its owner file is not written yet"


def prepare(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that a new run may write into ``out`` (locked by the caller). An earlier run is replaced only with
    ``overwrite``: it is moved into ``out/.previous-run`` until the new run has saved its final model."""
    if resume:
        return
    present = sorted(p.name for p in out.iterdir() if p.name not in (LOCK, OWNER))
    if not present:
        return
    foreign = [name for name in present if not _is_run_file(name)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ValueError(
            f"output_dir {out} already holds files tinypretrain did not write ({shown}); it never replaces those. "
            "Pick a new output_dir."
        )
    if not overwrite:
        raise ValueError(
            f"output_dir {out} already holds files (another run?). Pass resume_from_checkpoint=true to continue it, "
            "overwrite_output_dir=true to replace it, or a new output_dir."
        )
    if not _holds_a_run(out):
        raise ValueError(
            f"output_dir {out} holds {', '.join(present[:5])} but no tinypretrain run (no run.json or complete "
            "checkpoint), so it is not replaced. Pick a new output_dir."
        )
    if _is_users_card(out / "README.md"):
        present.remove("README.md")  # the user's words: kept, and the new run leaves them as they are
        logging.getLogger("tinypretrain").warning(
            "%s was edited after tinypretrain wrote it: kept for the new run (`tinypretrain card --force` rewrites "
            "it).", out / "README.md")
    if (out / PREVIOUS).exists():  # a replacement that never finished: the run inside it is the one to keep aside
        present.remove(PREVIOUS)
        for name in present:
            _remove(out / name)
        return
    (out / PREVIOUS).mkdir()
    for name in present:
        os.replace(out / name, out / PREVIOUS / name)


def _is_users_card(path: Path) -> bool:
    """Whether ``path`` is a run's README.md that the user edited: a replacement keeps it where it is."""
    return path.name == "README.md" and path.is_file() and not is_unedited_card(path)


def _holds_a_run(out: Path) -> bool:
    return any((out / name).exists() for name in ("run.json", PREVIOUS)) or last_complete_checkpoint(out) is not None


def finish_replacement(out: Path) -> None:
    """The new run has its final model: the run it replaced can go."""
    if (out / PREVIOUS).exists():
        shutil.rmtree(out / PREVIOUS)


def undo_replacement(out: Path) -> None:
    """The new run failed before its final model: remove what it wrote and put the replaced run back."""
    previous = out / PREVIOUS
    if not previous.exists():
        return
    for item in out.iterdir():
        if item.name not in (PREVIOUS, LOCK, OWNER) and _is_run_file(item.name) and not _is_users_card(item):
            _remove(item)
    for item in previous.iterdir():
        os.replace(item, out / item.name)
    previous.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
