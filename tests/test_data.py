import json

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset, Features, IterableDataset, List, Value
from hypothesis import given, settings
from hypothesis import strategies as st

import tinypretrain as tp

words = st.sampled_from("Lily Tom went to the park . She saw a big red ball ! \" said happy".split())
texts = st.lists(words, min_size=0, max_size=60).map(" ".join)
batches = st.lists(texts, min_size=1, max_size=5)
lengths = st.integers(2, 40)


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@settings(max_examples=150, deadline=None)
@given(batch=batches, max_length=lengths, keep=st.sampled_from(["tail", "head"]))
def test_truncate(tokenizer, batch, max_length, keep):
    out = tp.tokenize_truncate({"text": batch}, tokenizer, max_length=max_length, keep=keep)
    eos = tokenizer.eos_token_id
    assert len(out["input_ids"]) == len(batch)
    for text, ids, mask in zip(batch, out["input_ids"], out["attention_mask"]):
        full = _encode(tokenizer, text)
        assert len(ids) <= max_length and ids[-1] == eos and mask == [1] * len(ids)
        expected = full[-(max_length - 1):] if keep == "tail" else full[: max_length - 1]
        assert ids[:-1] == expected
        if len(full) < max_length:
            assert ids[:-1] == full


@settings(max_examples=150, deadline=None)
@given(batch=batches, max_length=lengths)
def test_split_loses_nothing(tokenizer, batch, max_length):
    out = tp.tokenize_truncate({"text": batch}, tokenizer, max_length=max_length, overflow="split")
    eos = tokenizer.eos_token_id
    chunks = iter(out["input_ids"])
    for text in batch:
        expected = _encode(tokenizer, text) + [eos]
        got = []
        while len(got) < len(expected):
            chunk = next(chunks)
            assert 1 <= len(chunk) <= max_length
            got += chunk
        assert got == expected  # nothing lost, nothing added
        assert got.count(eos) == 1 and got[-1] == eos  # EOS only at the true end
    assert next(chunks, None) is None
    bare = tp.tokenize_truncate({"text": batch}, tokenizer, max_length=max_length, overflow="split",
                                return_attention_mask=False)
    assert bare == {"input_ids": out["input_ids"]}


def test_truncate_without_eos_and_as_dataset_map(tokenizer, stories):
    out = tp.tokenize_truncate({"text": ["Lily went to the park."]}, tokenizer, max_length=4, add_eos=False)
    assert out["input_ids"][0] == _encode(tokenizer, "Lily went to the park.")[-4:]
    ds = Dataset.from_dict({"text": stories[:50]})
    mapped = ds.map(
        tp.tokenize_truncate, batched=True, fn_kwargs={"tokenizer": tokenizer, "max_length": 16, "overflow": "split"},
        remove_columns=ds.column_names,
    )
    assert len(mapped) > 50 and max(len(x) for x in mapped["input_ids"]) == 16


def test_cutting_long_texts_does_not_warn_about_the_tokenizers_length(stories):
    """Texts longer than the tokenizer's model_max_length are cut by design (split rows, scored or generated within
    the model's longer context), so transformers' "indexing errors" warning would only alarm the user."""
    import logging

    from transformers.utils import logging as hf_logging

    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=320, max_position_embeddings=512))
    calls = {
        "tokenize_truncate": lambda tok: tp.tokenize_truncate({"text": stories[:3]}, tok, max_length=8,
                                                              overflow="split"),
        "evaluate": lambda tok: tp.evaluate(model, tok, stories[:2]),
        "generate": lambda tok: tp.generate(model, tok, stories[0][:200], max_new_tokens=2, seed=0),
    }
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logging.add_handler(handler)
    try:
        for name, call in calls.items():  # a fresh tokenizer each: transformers warns once per tokenizer
            call(tp.train_tokenizer(stories[:200], vocab_size=300, model_max_length=8))
            assert not [r for r in records if "Token indices" in r.getMessage()], name
    finally:
        hf_logging.remove_handler(handler)


def test_truncate_errors(tokenizer):
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        tp.tokenize_truncate({"text": ["a"]}, tokenizer, max_length=1)
    with pytest.raises(ValueError, match="Column 'story' not in batch"):
        tp.tokenize_truncate({"text": ["a"]}, tokenizer, text_column="story")
    with pytest.raises(ValueError, match="must hold strings"):
        tp.tokenize_truncate({"text": [3]}, tokenizer)

    class NoEos:
        eos_token_id = None

    with pytest.raises(ValueError, match="no EOS token"):
        tp.tokenize_truncate({"text": ["a"]}, NoEos())


seqs = st.lists(st.lists(st.integers(0, 1000), min_size=0, max_size=30), min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(sequences=seqs, block=st.integers(2, 17), eos=st.one_of(st.none(), st.just(1001)))
def test_pack_sequences(sequences, block, eos):
    stream = [t for s in sequences for t in (s + ([eos] if eos is not None else []))]
    blocks = tp.pack_sequences(sequences, block, eos_token_id=eos)
    assert blocks.ndim == 2 and blocks.shape[1] == block and blocks.dtype == np.int64
    assert blocks.shape[0] == len(stream) // block
    assert blocks.reshape(-1).tolist() == stream[: blocks.size]  # order kept, only the tail dropped
    assert len(stream) - blocks.size < block
    arrow = pa.array(sequences, type=pa.list_(pa.int64()))
    assert np.array_equal(tp.pack_sequences(arrow, block, eos_token_id=eos), blocks)


@settings(max_examples=50, deadline=None)
@given(sequences=st.lists(st.lists(st.integers(0, 1000), min_size=1, max_size=30), min_size=4, max_size=12))
def test_pack_dataset_honours_selection(sequences):
    ds = Dataset.from_dict({"input_ids": sequences}).select([3, 0, 2])
    picked = [sequences[3], sequences[0], sequences[2]]
    total = sum(map(len, picked))
    if total < 2:
        return
    packed = tp.pack_dataset(ds, 2)
    assert packed.column_names == ["input_ids"]
    assert np.array_equal(np.array(packed["input_ids"]), tp.pack_sequences(picked, 2))


@settings(max_examples=40, deadline=None)
@given(sequences=st.lists(st.lists(st.integers(0, 1000), min_size=0, max_size=20), min_size=1, max_size=30),
       block=st.integers(2, 9), chunk_rows=st.integers(1, 7), eos=st.sampled_from([None, 7]))
def test_pack_dataset_in_chunks_equals_packing_everything_at_once(sequences, block, chunk_rows, eos):
    """Chunked packing (bounded memory) carries tokens across chunk edges: same blocks as one whole-column pack."""
    whole = tp.pack_sequences(sequences, block, eos_token_id=eos)
    ds = Dataset.from_dict({"input_ids": sequences}, features=Features({"input_ids": List(Value("int64"))}))
    if len(whole) == 0:
        with pytest.raises(ValueError, match="Not enough tokens"):
            tp.pack_dataset(ds, block, eos_token_id=eos, chunk_rows=chunk_rows)
        return
    packed = tp.pack_dataset(ds, block, eos_token_id=eos, chunk_rows=chunk_rows)
    assert np.array_equal(np.array(packed["input_ids"]), whole)


def test_pack_dataset_too_small():
    with pytest.raises(ValueError, match="Not enough tokens for one block of 64"):
        tp.pack_dataset(Dataset.from_dict({"input_ids": [[1, 2, 3]]}), 64)


# ----------------------------------------------------------------------------------------------------- loading
def _write_eot(path, stories):
    path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")


def test_local_directory_splits_and_slices(tmp_path):
    _write_eot(tmp_path / "TinyStories-train.txt", [f"Story {i}.\nLine two." for i in range(10)])
    _write_eot(tmp_path / "TinyStories-valid.txt", ["Valid one.", "Valid two."])
    dsd = tp.load_text_dataset(tmp_path, split=None)
    assert set(dsd) == {"train", "validation"}
    assert dsd["train"][0]["text"] == "Story 0.\nLine two." and len(dsd["train"]) == 10
    assert tp.load_text_dataset(tmp_path, "validation")["text"] == ["Valid one.", "Valid two."]
    assert tp.load_text_dataset(tmp_path, "train[:30%]")["text"] == [f"Story {i}.\nLine two." for i in range(3)]
    assert len(tp.load_text_dataset(tmp_path, "train[2:4]+validation")) == 4
    with pytest.raises(ValueError, match="not found; available splits"):
        tp.load_text_dataset(tmp_path, "test")


def test_cache_notices_changed_files(tmp_path):
    _write_eot(tmp_path / "train.txt", ["Old story."])
    assert tp.load_text_dataset(tmp_path / "train.txt")["text"] == ["Old story."]
    _write_eot(tmp_path / "train.txt", ["New story.", "Another one."])
    assert tp.load_text_dataset(tmp_path / "train.txt")["text"] == ["New story.", "Another one."]


def test_plain_text_without_separators_is_one_record_per_line(tmp_path):
    (tmp_path / "notes.txt").write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert tp.load_text_dataset(tmp_path / "notes.txt")["text"] == ["first line", "second line"]


def test_jsonl_json_parquet(tmp_path):
    rows = [{"text": "a story", "n": 1}, {"text": "another", "n": 2}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "validation.json").write_text(json.dumps(rows))
    Dataset.from_list(rows).to_parquet(str(tmp_path / "test.parquet"))
    dsd = tp.load_text_dataset(tmp_path, None)
    assert {k: dsd[k]["text"] for k in dsd} == {k: ["a story", "another"] for k in ("train", "validation", "test")}


def test_streaming_gives_iterable(tmp_path):
    _write_eot(tmp_path / "train.txt", ["One.", "Two.", "Three."])
    ds = tp.load_text_dataset(tmp_path, "train[1:3]", streaming=True)
    assert isinstance(ds, IterableDataset)
    assert [r["text"] for r in ds] == ["Two.", "Three."]


def test_bad_inputs(tmp_path):
    (tmp_path / "train.txt").write_bytes("caf\xe9 story\n<|endoftext|>\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8"):
        tp.load_text_dataset(tmp_path / "train.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("hi")
    with pytest.raises(ValueError, match="No readable data files"):
        tp.load_text_dataset(empty)
    (tmp_path / "cols").mkdir()
    (tmp_path / "cols" / "train.jsonl").write_text(json.dumps({"story": "x", "n": 3}))
    with pytest.raises(ValueError, match=r"Column 'text' not found; the dataset has \['story', 'n'\]"):
        tp.load_text_dataset(tmp_path / "cols")
    with pytest.raises(ValueError, match="holds .*int64.*not text"):
        tp.load_text_dataset(tmp_path / "cols", text_column="n")
    with pytest.raises(ValueError, match="does not exist"):
        tp.load_text_dataset(tmp_path / "missing.txt")


def test_hub_names_go_to_the_hub(monkeypatch):
    """A hub name reaches datasets' hub loader (which fails here only for lack of network)."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # for require_hub; the libraries read it at import, so set theirs too
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    # datasets' own hub loader got the name and split, and refused only because the hub is off limits
    with pytest.raises(ConnectionError, match=r"Couldn't reach 'tinypretrain-tests/no-such-dataset' on the Hub "
                                              r"\(OfflineModeIsEnabled\)"):
        tp.load_text_dataset("tinypretrain-tests/no-such-dataset", "train[:1%]")


def test_shared_tinystories(tinystories_dir):
    dsd = tp.load_text_dataset(tinystories_dir, None)
    assert set(dsd) == {"train", "validation"}
    assert len(dsd["train"]) == 6363 and len(dsd["validation"]) == 1099
    assert all("<|endoftext|>" not in t for t in dsd["validation"]["text"])


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(seqs, min_size=0, max_size=5), block=st.integers(2, 17))
def test_pack_stream_equals_packing_everything(batches, block):
    everything = [s for batch in batches for s in batch]
    streamed = list(tp.pack_stream(iter(batches), block))
    expected = tp.pack_sequences(everything, block)
    assert len(streamed) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(streamed, expected))


def test_streams_take_row_slices_only(tmp_path):
    _write_eot(tmp_path / "train.txt", ["One.", "Two."])
    with pytest.raises(ValueError, match="cannot be a percentage"):
        tp.load_text_dataset(tmp_path, "train[:50%]", streaming=True)
    assert set(tp.load_text_dataset(tmp_path, None, streaming=True)) == {"train"}
