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
@given(seqs=sequences, side=sides, data=st.data())
def test_loss_weights_come_through_as_floats_padded_with_zero(seqs, side, data):
    weights = [data.draw(st.lists(st.floats(0, 8), min_size=len(s), max_size=len(s))) for s in seqs]
    features = [{"input_ids": s, "labels": s, "loss_weights": w} for s, w in zip(seqs, weights)]
    batch = tp.causal_collator(pad_token_id=PAD, padding_side=side)(features)
    got = batch["loss_weights"]
    assert got.dtype == torch.float32 and got.shape == batch["input_ids"].shape
    valid = _valid_cells([len(s) for s in seqs], got.shape[1], side)
    assert np.all(got.numpy()[~valid] == 0)
    assert np.array_equal(got.numpy()[valid], np.concatenate([np.asarray(w, dtype=np.float32) for w in weights]))
    if len(seqs) > 1:
        with pytest.raises(ValueError, match="Some features carry loss_weights and some do not"):
            tp.causal_collator(pad_token_id=PAD)([features[0], {"input_ids": seqs[1], "labels": seqs[1]}])


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


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(st.integers(0, 6), min_size=n, max_size=n),
                                                         min_size=1, max_size=4)))
def test_document_positions_restart_after_every_eos(rows):
    batch = tp.causal_collator(pad_token_id=PAD, document_eos_token_id=EOS)([{"input_ids": r} for r in rows])
    assert "attention_mask" not in batch and torch.equal(batch["labels"], batch["input_ids"])
    for row, positions in zip(rows, batch["position_ids"].tolist()):
        expected, pos = [], 0
        for i, token in enumerate(row):
            pos = 0 if i == 0 or row[i - 1] == EOS else pos + 1
            expected.append(pos)
        assert positions == expected


def test_documents_never_attend_across_boundaries():
    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, vocab_size=50), seed=0)
    doc1, doc2, doc3 = [5, 6, 7, EOS], [9, 10, 11, 12, 13, EOS], [20, 21]
    collate = tp.causal_collator(pad_token_id=PAD, document_eos_token_id=EOS)
    batch = collate([{"input_ids": doc1 + doc2 + doc3}])
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]
        for start, doc in ((0, doc1), (4, doc2), (10, doc3)):
            alone = model(input_ids=torch.tensor([doc]), use_cache=False).logits[0]
            assert torch.allclose(packed[start : start + len(doc)], alone, atol=1e-5)
        crossing = model(input_ids=batch["input_ids"], use_cache=False).logits[0]  # plain packing attends across
    assert not torch.allclose(crossing[4:10], packed[4:10], atol=1e-3)
    with pytest.raises(ValueError, match="equal length"):
        collate([{"input_ids": [1, 2]}, {"input_ids": [1]}])
