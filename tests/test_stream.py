"""Streams: .txt files read shard by shard, and a streamed run's blocks resumed from a saved position."""

from itertools import islice

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinypretrain as tp
from tinypretrain.data import load
from tinypretrain.data.load import EOT, has_text, load_text_dataset, read_eot_text, read_text_ranges, text_ranges
from tinypretrain.data.stream import BlockStream

pieces = st.sampled_from(["Lily", " ", "é", "日本", "\n", "\n\n", "\r\n", "x" * 40, EOT, EOT + EOT, "<|end"])


@settings(max_examples=200, deadline=None)
@given(body=st.lists(pieces, max_size=80).map("".join), bom=st.booleans(), shard_bytes=st.integers(1, 300))
def test_a_file_read_in_shards_gives_each_record_once_in_order(tmp_path_factory, body, bom, shard_bytes):
    path = tmp_path_factory.mktemp("txt") / "train.txt"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode())
    text = body.replace("\r\n", "\n")
    if EOT in body:
        expected = [t.strip() for t in text.split(EOT) if t.strip()]
    else:  # no separator: a record per non-blank line
        expected = [line for line in text.split("\n") if line.strip()]
    whole = [row["text"] for row in read_eot_text([str(path)])]
    assert whole == expected
    assert [row["text"] for row in read_text_ranges(text_ranges([str(path)], shard_bytes))] == whole


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text("".join(story + EOT for story in tp.generate_stories(900, seed=5)))
    return path


def _stream(corpus, tokenizer):
    texts = load_text_dataset(corpus, "train", streaming=True).filter(has_text, input_columns="text")
    return BlockStream(texts, tokenizer, max_length=32, batch_texts=50)


def test_a_resumed_stream_continues_exactly_and_reads_nothing_before_its_position(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(load, "SHARD_BYTES", 1 << 14)  # 16 KiB shards, about 25 stories each
    tokenizer = tp.train_tokenizer(tp.generate_stories(300, seed=1), vocab_size=300)
    texts_per_shard = max(sum(1 for _ in read_text_ranges([r])) for r in text_ranges([str(corpus)], 1 << 14))
    uninterrupted = _stream(corpus, tokenizer)
    blocks = list(islice(iter(uninterrupted), 20_000))
    per_pass = next(m.first_block for m in uninterrupted._marks if m.epoch == 1)
    decoded = []
    monkeypatch.setattr(load, "_decode", lambda raw, path, offset, read=load._decode: decoded.append(1) or read(
        raw, path, offset))
    for trained in (0, 1, 777, per_pass - 1, per_pass, per_pass + 333):
        reader = _stream(corpus, tokenizer)
        list(islice(iter(reader), trained + 100))  # reads ahead of what was trained on, as a data loader does
        reader.release(trained)
        reader.save_position(tmp_path, trained)
        resumed = _stream(corpus, tokenizer)
        resumed.resume(tmp_path)
        decoded.clear()
        again = list(islice(iter(resumed), 300))
        assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(again, blocks[trained:], strict=False))
        assert resumed.resumed_at["blocks"] == trained
        # the texts decoded on resume: those it tokenized, plus at most the rest of one shard skipped unread by datasets
        assert len(decoded) <= resumed.texts_read + texts_per_shard
        assert resumed.texts_read < 300 * 32 // 20  # about as many texts as 300 blocks need, not the pass before them


def test_a_stream_that_forgot_a_position_says_so(corpus, tmp_path):
    tokenizer = tp.train_tokenizer(tp.generate_stories(300, seed=1), vocab_size=300)
    reader = _stream(corpus, tokenizer)
    list(islice(iter(reader), 3000))
    reader.release(2500)
    with pytest.raises(RuntimeError, match="no longer knows where block 10 came from"):
        reader.position(10)
    with pytest.raises(ValueError, match="holds no stream position .* --ignore_data_skip true"):
        reader.resume(tmp_path)
