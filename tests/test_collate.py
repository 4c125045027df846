import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DataCollatorForLanguageModeling

import tinypretrain as tp

EOS, PAD = 2, 3
sequences = st.lists(st.lists(st.integers(0, 50), min_size=0, max_size=24), min_size=1, max_size=8)
sides = st.sampled_from(["right", "left"])
multiples = st.one_of(st.none(), st.integers(1, 16))


def _valid_cells(lengths, width, side):
    cols = np.arange(width)
    lengths = np.asarray(lengths)[:, None]
    return cols >= width - lengths if side == "left" else cols < lengths


@settings(max_examples=200, deadline=None)
@given(seqs=sequences, side=sides, multiple=multiples)
def test_padding_mask_and_labels(seqs, side, multiple):
    batch = tp.causal_collator(pad_token_id=PAD, padding_side=side, pad_to_multiple_of=multiple)(
        [{"input_ids": s} for s in seqs]
    )
    ids, mask, labels = (batch[k].numpy() for k in ("input_ids", "attention_mask", "labels"))
    longest = max(len(s) for s in seqs)
    width = ids.shape[1]
    assert all(t.dtype == torch.long for t in batch.values())
    assert width >= longest and (multiple is None or width % multiple == 0) and width - longest < (multiple or 1)
    valid = _valid_cells([len(s) for s in seqs], width, side)
    assert np.array_equal(mask, valid.astype(int))
    assert np.array_equal(labels, np.where(mask == 1, ids, -100))
    assert np.all(ids[~valid] == PAD)
    for row, s in zip(ids, seqs):
        kept = row[-len(s):] if side == "left" and s else row[: len(s)]
        assert kept.tolist() == s


@settings(max_examples=100, deadline=None)
@given(seqs=sequences, side=sides)
def test_eos_keeps_its_label_when_pad_is_eos(seqs, side):
    seqs = [s + [EOS] for s in seqs]
    batch = tp.causal_collator(pad_token_id=EOS, padding_side=side)([{"input_ids": s} for s in seqs])
    real_eos = (batch["input_ids"] == EOS) & (batch["attention_mask"] == 1)
    assert int(real_eos.sum()) >= len(seqs)
    assert torch.all(batch["labels"][real_eos] == EOS)


@settings(max_examples=100, deadline=None)
@given(seqs=sequences, side=sides, data=st.data())
def test_sft_labels_are_kept_and_padded(seqs, side, data):
    features = []
    for s in seqs:
        prompt = data.draw(st.integers(0, len(s)))
        features.append({"input_ids": s, "labels": [-100] * prompt + s[prompt:]})
    batch = tp.causal_collator(pad_token_id=PAD, padding_side=side)(features)
    width = batch["labels"].shape[1]
    valid = _valid_cells([len(s) for s in seqs], width, side)
    labels = batch["labels"].numpy()
    assert np.all(labels[~valid] == -100)
    assert np.array_equal(labels[valid], np.concatenate([np.asarray(f["labels"], dtype=np.int64) for f in features]))


@settings(max_examples=100, deadline=None)
@given(seqs=st.lists(st.lists(st.integers(4, 50), min_size=0, max_size=20), min_size=1, max_size=6), side=sides)
def test_matches_seed_collator_except_eos_labels(llama_style_tokenizer, seqs, side):
    """The seed's DataCollatorForLanguageModeling equals ours everywhere but on real EOS labels, which it drops."""
    tok = llama_style_tokenizer
    tok.padding_side = side
    features = [{"input_ids": s + [tok.eos_token_id], "attention_mask": [1] * (len(s) + 1)} for s in seqs]
    seed = DataCollatorForLanguageModeling(tok, mlm=False)([dict(f) for f in features])
    ours = tp.causal_collator(tok, padding_side=side)([dict(f) for f in features])
    assert torch.equal(seed["input_ids"], ours["input_ids"])
    assert torch.equal(seed["attention_mask"], ours["attention_mask"])
    real_eos = (ours["input_ids"] == tok.eos_token_id) & (ours["attention_mask"] == 1)
    assert torch.equal(seed["labels"][~real_eos], ours["labels"][~real_eos])
    assert torch.all(seed["labels"][real_eos] == -100)  # the seed's bug: models never see a story end
    assert torch.all(ours["labels"][real_eos] == tok.eos_token_id)
    assert int(real_eos.sum()) == len(seqs)


def test_respects_zero_attention_mask_inside_features():
    batch = tp.causal_collator(pad_token_id=0)([{"input_ids": [5, 6, 7], "attention_mask": [0, 1, 1]}, {"input_ids": [8]}])
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_needs_a_pad_id():
    with pytest.raises(ValueError, match="needs a pad id"):
        tp.causal_collator()
    with pytest.raises(ValueError, match="padding_side"):
        tp.causal_collator(pad_token_id=0, padding_side="middle")
    with pytest.raises(ValueError, match="empty batch"):
        tp.causal_collator(pad_token_id=0)([])
