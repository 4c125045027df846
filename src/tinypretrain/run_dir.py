"""The run folder: its name, one writer at a time (a lock), and replacing an earlier run without ever deleting a file
tinypretrain did not write."""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from .card import is_unedited_card
from .trainer import last_complete_checkpoint

LOCK = ".tinypretrain.lock"
PREVIOUS = ".previous-run"  # an earlier run being replaced: deleted once the new run has its final model
# What a run writes into its folder; anything else there is the user's and is never moved or deleted.
RUN_FILES = (
    "model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "run.json", "metrics.jsonl", "loss.png", "samples.md",
    "README.md", "trainer_state.json", "checkpoint-*", "runs", ".final", LOCK, PREVIOUS,
)


def run_folder(output_dir: str | None, state: PartialState) -> Path:
    """``output_dir``, or a new runs/run-<timestamp>; rank 0 names it and every rank uses that name."""
    name = output_dir or str(Path("runs") / time.strftime("run-%Y%m%d-%H%M%S"))
    if state.num_processes > 1:
        name = broadcast_object_list([name], from_process=0)[0]
    return Path(name).expanduser()


def _is_run_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILES)


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the block: a second run into the same folder fails, naming the first one's PID. A lock
    left by a killed run (its PID is gone) is taken over. A folder made here that the run left empty (it failed before
    writing anything) is removed again."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is an existing file; pass a directory path.")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and _alive(owner):
                raise ValueError(
                    f"output_dir {out} is in use by another run (PID {owner}); wait for it, stop it, or pick another "
                    "output_dir."
                ) from None
            lock.unlink(missing_ok=True)  # stale: its run was killed
    else:
        raise ValueError(f"Could not lock output_dir {out}; another run keeps taking it. Pick another output_dir.")
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            with suppress(OSError):  # another run may have just taken the folder
                out.rmdir()


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def prepare(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that a new run may write into ``out`` (locked by the caller). An earlier run is replaced only with
    ``overwrite``: it is moved into ``out/.previous-run`` until the new run has saved its final model."""
    if resume:
        return
    present = sorted(p.name for p in out.iterdir() if p.name != LOCK)
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
    if "README.md" in present and not is_unedited_card(out / "README.md"):
        present.remove("README.md")  # the user's words: kept, and the new run leaves them as they are
        logging.getLogger("tinypretrain").warning(
            "%s was edited after tinypretrain wrote it: kept for the new run (`tinypretrain card --force` rewrites it).",
            out / "README.md")
    if (out / PREVIOUS).exists():  # a replacement that never finished: the run inside it is the one to keep aside
        present.remove(PREVIOUS)
        for name in present:
            _remove(out / name)
        return
    (out / PREVIOUS).mkdir()
    for name in present:
        os.replace(out / name, out / PREVIOUS / name)


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
        kept_card = item.name == "README.md" and not is_unedited_card(item)  # the user's, kept by prepare()
        if item.name not in (PREVIOUS, LOCK) and _is_run_file(item.name) and not kept_card:
            _remove(item)
    for item in previous.iterdir():
        os.replace(item, out / item.name)
    previous.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
