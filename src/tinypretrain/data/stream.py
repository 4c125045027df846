"""A streamed run's training rows: texts from a ``datasets`` stream, tokenized a batch at a time and packed into blocks
as Trainer pulls them, with a position that a checkpoint saves and a resume starts from, so no text is tokenized twice
and none before the position is read again (datasets skips whole shards unread)."""

from __future__ import annotations

import io
import json
from collections import deque
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import IterableDataset

from ..utils.io import atomic_write_bytes
from .pack import _flatten, tokenize_truncate

POSITION_FILE = "stream_position.npz"
MARKS_KEPT = 64  # text batches remembered (about 1 MB each) when nobody calls release(): a bound on memory


@dataclass
class _Mark:
    """One batch of texts as read: the blocks yielded before its own, the stream after it, and the tokens not yet
    yielded then (its own, after the previous batch's leftover)."""

    first_block: int
    texts_state: dict[str, Any]
    texts_read: int
    epoch: int
    tokens: np.ndarray


class BlockStream(torch.utils.data.IterableDataset):
    """Blocks of ``max_length`` tokens packed from ``texts`` (a ``datasets.IterableDataset``) in order, as
    ``pack_stream`` packs them, pass after pass without end. ``position(blocks)`` is where the stream stands once ``blocks`` blocks
    are trained on: the text stream's own ``state_dict()`` after a batch plus the tokens left from it. ``resume``
    starts the next pass there."""

    def __init__(self, texts: IterableDataset, tokenizer: Any, max_length: int, text_column: str = "text",
                 batch_texts: int = 1000) -> None:
        self.texts, self.tokenizer, self.text_column = texts, tokenizer, text_column
        self.max_length, self.batch_texts = max_length, batch_texts
        self.texts_read = 0  # texts this process read and tokenized
        self.resumed_at: dict[str, int] | None = None  # the blocks and texts before a resume's position
        self._blocks, self._texts, self._epoch = 0, 0, 0  # counted from the run's start, across resumes
        self._start: dict[str, Any] | None = None
        self._marks: deque[_Mark] = deque(maxlen=MARKS_KEPT)

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            raise ValueError("A stream is read in the training process so that it can resume exactly; set "
                             "dataloader_num_workers=0.")
        # Pass after pass without end (a streamed run stops at max_steps): Trainer never sees a short last batch, so
        # a checkpoint's step tells exactly how many blocks were trained on.
        start, self._start = self._start, None
        while True:
            produced = False
            for block in self._pass(start):
                produced = True
                yield block
            if not produced and start is None:
                return  # fewer tokens than one block
            start = None

    def _pass(self, start: dict[str, Any] | None):
        pending = np.empty(0, dtype=np.int64)
        self.texts.set_epoch(self._epoch if start is None else start["epoch"])
        if start is not None:
            self._blocks, self._texts, self._epoch = start["blocks"], start["texts"], start["epoch"]
            self.texts.load_state_dict(start["texts_state"])
            pending = start["pending"]
            self._marks.append(_Mark(self._blocks, start["texts_state"], self._texts, self._epoch, pending))
        rows = iter(self.texts)
        while True:
            whole = len(pending) // self.max_length
            for block in pending[: whole * self.max_length].reshape(whole, self.max_length):
                self._blocks += 1
                yield {"input_ids": block}
            pending = pending[whole * self.max_length :]
            batch = [row[self.text_column] for row in islice(rows, self.batch_texts)]
            if not batch:
                break
            self.texts_read += len(batch)
            self._texts += len(batch)
            ids = tokenize_truncate({self.text_column: batch}, self.tokenizer, max_length=self.max_length,
                                    text_column=self.text_column, overflow="split",
                                    return_attention_mask=False)["input_ids"]
            pending = np.concatenate([pending, _flatten(ids)[0]])
            self._marks.append(_Mark(self._blocks, self.texts.state_dict(), self._texts, self._epoch, pending))
        self._epoch += 1  # the final partial block is dropped, as pack_stream drops it

    @property
    def passes(self) -> int:
        """Passes over the texts completed so far."""
        return self._epoch

    def release(self, trained_blocks: int) -> None:
        """Forget the batches wholly before ``trained_blocks``: no position can fall there any more."""
        while len(self._marks) > 1 and self._marks[1].first_block <= trained_blocks:
            self._marks.popleft()

    def position(self, trained_blocks: int) -> dict[str, Any]:
        """Where the stream stands once ``trained_blocks`` blocks are trained on (it may have read further ahead)."""
        mark = next((m for m in reversed(self._marks) if m.first_block <= trained_blocks), None)
        used = (trained_blocks - mark.first_block) * self.max_length if mark else -1
        if mark is None or used > len(mark.tokens):
            raise RuntimeError(f"The stream no longer knows where block {trained_blocks} came from (it has read to "
                               f"block {self._blocks}); report this as a bug.")
        return {"blocks": trained_blocks, "texts": mark.texts_read, "epoch": mark.epoch,
                "texts_state": mark.texts_state, "pending": mark.tokens[used:]}

    def save_position(self, folder: str | Path, trained_blocks: int) -> None:
        """Write ``position(trained_blocks)`` into a checkpoint ``folder``."""
        position = self.position(trained_blocks)
        pending = position.pop("pending")
        buffer = io.BytesIO()
        np.savez(buffer, pending=pending, position=np.array(json.dumps(position)))
        atomic_write_bytes(Path(folder) / POSITION_FILE, buffer.getvalue())

    def resume(self, folder: str | Path) -> None:
        """Start the next pass where the stream stood when checkpoint ``folder`` was saved."""
        path = Path(folder) / POSITION_FILE
        if not path.exists():
            raise ValueError(f"{folder} holds no stream position (an older tinypretrain saved it); resume with "
                             "--ignore_data_skip true to read the stream again from its start.")
        with np.load(path) as saved:
            self._start = {**json.loads(str(saved["position"])), "pending": saved["pending"].astype(np.int64)}
        self.resumed_at = {"blocks": self._start["blocks"], "texts": self._start["texts"]}
