import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

import tinypretrain as tp


def test_trained_tokenizer_round_trips_through_autotokenizer(tmp_path, stories):
    tok = tp.train_tokenizer(stories[:500], vocab_size=400, save_dir=tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert (loaded.unk_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (0, 1, 2, 3)
    text = 'Lily said, "Héllo — 世界!"\nThe end.'
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == text  # byte-level: lossless, no unknown characters
    assert len(loaded) <= 400 and loaded.padding_side == "right"


def test_train_from_a_corpus_path(tmp_path):
    (tmp_path / "train.txt").write_text("Once upon a time.\n<|endoftext|>\nThe end.\n<|endoftext|>\n")
    tok = tp.train_tokenizer(tmp_path, vocab_size=300, min_frequency=1)
    assert tok.decode(tok("Once upon a time.", add_special_tokens=False)["input_ids"]) == "Once upon a time."


def test_train_errors():
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        tp.train_tokenizer(["a"], vocab_size=100)
    with pytest.raises(ValueError, match="needs strings"):
        tp.train_tokenizer([1, 2], vocab_size=300)


def test_load_tokenizer_sets_pad_and_side(tmp_path, tokenizer):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>")
    tok.save_pretrained(tmp_path / "nopad")
    loaded = tp.load_tokenizer(tmp_path / "nopad")
    assert loaded.pad_token_id == loaded.eos_token_id == 2 and loaded.padding_side == "right"
    assert tp.load_tokenizer(tmp_path / "nopad", padding_side="left").padding_side == "left"


def test_load_tokenizer_without_eos(tmp_path, tokenizer):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer)
    tok.save_pretrained(tmp_path / "noeos")
    with pytest.raises(ValueError, match="has no EOS token"):
        tp.load_tokenizer(tmp_path / "noeos")


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(st.text(alphabet=st.sampled_from("Lily sat.\n  é日!?'\"\t"), max_size=60), min_size=1, max_size=5))
def test_fast_batch_encoding_gives_the_tokenizers_own_ids(tokenizer, llama2_kind_tokenizer, batch):
    from tinypretrain.data.pack import _token_ids

    for tok in (tokenizer, llama2_kind_tokenizer):
        assert _token_ids(tok, batch) == tok(batch, add_special_tokens=False)["input_ids"]


def test_a_backend_set_to_truncate_goes_through_the_tokenizers_call(tokenizer):
    from tinypretrain.data.pack import _token_ids

    tok = copy.deepcopy(tokenizer)
    tok.backend_tokenizer.enable_truncation(3)
    text = ["Lily and Tom went to the park to play with a big red ball."]
    assert len(_token_ids(tok, text)[0]) > 3 and _token_ids(tok, text) == tok(text, add_special_tokens=False)["input_ids"]
