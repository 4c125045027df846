import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tinypretrain as tp


def _reference(hidden, weight, labels):
    logits = hidden @ weight.T
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum")


@pytest.mark.parametrize("chunk", [None, 0, 1, 7, 64, 10_000])
def test_chunked_loss_and_gradients_equal_the_plain_loss(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(3, 17, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (3, 17))
    labels[0, 5:9] = -100
    expected = _reference(hidden, weight, labels)
    expected_grads = torch.autograd.grad(expected, (hidden, weight))
    got = tp.causal_lm_loss(hidden, weight, labels, chunk_size=chunk)
    grads = torch.autograd.grad(got, (hidden, weight))
    assert torch.allclose(got.double(), expected, rtol=1e-6)
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("chunk", [None, 1, 7, 10_000])
def test_token_weights_scale_each_labels_term(chunk):
    """Weighted: each label's cross-entropy times its weight (aligned with labels, so the first column is unused);
    all-ones weights are the plain loss; chunking changes nothing."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, dtype=torch.float64)
    labels = torch.randint(0, 30, (2, 9))
    labels[1, :4] = -100
    weights = torch.rand(2, 9, dtype=torch.float64) * 4
    per_token = F.cross_entropy((hidden @ weight.T)[:, :-1].reshape(-1, 30), labels[:, 1:].reshape(-1),
                                ignore_index=-100, reduction="none")
    expected = (per_token * weights[:, 1:].reshape(-1)).sum()
    got = tp.causal_lm_loss(hidden, weight, labels, chunk_size=chunk, token_weights=weights)
    assert torch.allclose(got, expected, rtol=1e-9)
    ones = tp.causal_lm_loss(hidden, weight, labels, chunk_size=chunk, token_weights=torch.ones(2, 9))
    assert torch.allclose(ones, _reference(hidden, weight, labels.clamp(min=0)) - _ignored(hidden, weight, labels))
    grad = torch.autograd.grad(got, hidden)[0]
    assert torch.all(grad[1, :3] == 0)  # positions whose labels are ignored get no gradient, whatever their weight


def _ignored(hidden, weight, labels):
    """The cross-entropy that the -100 labels would have had (as class 0), to take off an unmasked sum."""
    per_token = F.cross_entropy((hidden @ weight.T)[:, :-1].reshape(-1, weight.shape[0]),
                                labels[:, 1:].clamp(min=0).reshape(-1), reduction="none")
    return per_token[labels[:, 1:].reshape(-1) == -100].sum()


def test_matches_the_model_loss():
    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=100), seed=0)
    ids = torch.randint(0, 100, (2, 12))
    hf = model(input_ids=ids, labels=ids).loss
    hidden = model.model(input_ids=ids).last_hidden_state
    ours = tp.causal_lm_loss(hidden, model.lm_head.weight, ids, chunk_size=5) / (2 * 11)
    assert torch.allclose(ours, hf, rtol=1e-5)


@pytest.mark.slow
def test_pretrain_with_chunked_loss_equals_plain(tmp_path):
    common = dict(max_steps=3, builtin_stories=200, max_length=32, vocab_size=300, num_samples=0, logging_steps=1,
                  per_device_train_batch_size=4, gradient_accumulation_steps=2,
                  model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "num_key_value_heads": 1})
    plain = tp.pretrain(output_dir=str(tmp_path / "plain"), **common)
    chunked = tp.pretrain(output_dir=str(tmp_path / "chunked"), loss_chunk_size=16, **common)
    assert chunked.metrics["train_loss"] == pytest.approx(plain.metrics["train_loss"], rel=1e-5)
    for a, b in zip(plain.model.parameters(), chunked.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 5, 64])
def test_chunked_loss_under_bf16_autocast_is_the_plain_loss_to_bf16_precision(chunk):
    """Under autocast the chunks' matmuls run in bf16 (as the plain loss's lm_head does), logits and sums in fp32;
    without gradients the forward makes none."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 33, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    labels = torch.randint(0, 40, (2, 33))
    labels[1, -5:] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = tp.causal_lm_loss(hidden, weight, labels)
        chunked = tp.causal_lm_loss(hidden, weight, labels, chunk_size=chunk)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, plain, rtol=1e-3, atol=0)
    for g, e in zip(torch.autograd.grad(chunked, (hidden, weight)), torch.autograd.grad(plain, (hidden, weight))):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=0.02, atol=0.02)
    with torch.no_grad():
        scored = tp.causal_lm_loss(hidden, weight, labels, chunk_size=chunk)
    assert scored.grad_fn is None and scored.item() == pytest.approx(chunked.item(), rel=1e-3)


@pytest.mark.parametrize("bf16", [False, True])
def test_a_runs_chunked_loss_is_computed_in_the_runs_precision(tmp_path, monkeypatch, bf16):
    """Accelerate autocasts only the model's forward; the chunked loss after it runs under the same autocast, so its
    lm_head matmul is bf16 in a bf16 run (as transformers' loss inside the forward), fp32 otherwise."""
    import tinypretrain.train.trainer as trainer_module

    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return tp.causal_lm_loss(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "causal_lm_loss", spy)
    tp.pretrain(output_dir=str(tmp_path / "run"), max_steps=2, bf16=bf16, loss_chunk_size=16, builtin_stories=100,
                max_length=32, vocab_size=300, per_device_train_batch_size=2, num_samples=0, story_samples=0,
                eval_size=4, max_eval_samples=4, model_overrides={"hidden_size": 32, "num_hidden_layers": 1,
                                                                  "num_attention_heads": 2, "num_key_value_heads": 1})
    assert seen == [torch.bfloat16 if bf16 else False] * 2


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(2, 12), vocab=st.integers(2, 20), chunk=st.integers(1, 40),
       seed=st.integers(0, 2**16), weighted=st.booleans())
def test_any_chunking_gives_the_plain_loss_and_gradients(batch, length, vocab, chunk, seed, weighted):
    """For any shape, chunk size, ignored labels and token weights, the chunked loss and its gradients are the plain
    loss's (float64, so to rounding)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[torch.rand(batch, length, generator=generator) < 0.3] = -100
    weights = torch.rand(batch, length, dtype=torch.float64, generator=generator) * 3 if weighted else None
    plain = tp.causal_lm_loss(hidden, weight, labels, token_weights=weights)
    chunked = tp.causal_lm_loss(hidden, weight, labels, chunk_size=chunk, token_weights=weights)
    torch.testing.assert_close(chunked, plain)
    for got, expected in zip(torch.autograd.grad(chunked, (hidden, weight)),
                             torch.autograd.grad(plain, (hidden, weight))):
        torch.testing.assert_close(got, expected)
