import math

import pytest
import torch
import torch.nn.functional as F

import tinypretrain as tp


@pytest.fixture(scope="module")
def model(tokenizer):
    config = tp.make_llama_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  vocab_size=len(tokenizer), max_position_embeddings=128)
    return tp.build_model(config, seed=0).eval()


TEXTS = ["Lily went to the park.", "Tom and his dog played with a red ball all day.", "The end."]


def test_evaluate_is_the_per_story_token_average(model, tokenizer):
    nats = tokens = 0.0
    for text in TEXTS:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        nats += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        tokens += ids.shape[1] - 1
    scores = tp.evaluate(model, tokenizer, TEXTS)
    assert scores["loss"] == pytest.approx(nats / tokens, rel=1e-5)
    assert scores["predicted_tokens"] == tokens and scores["stories"] == 3
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-6)
    assert scores["bits_per_byte"] == pytest.approx(nats / math.log(2) / sum(len(t.encode()) for t in TEXTS), rel=1e-5)


def test_evaluate_does_not_depend_on_batching(model, tokenizer, stories):
    one = tp.evaluate(model, tokenizer, stories[:20], batch_tokens=64)
    many = tp.evaluate(model, tokenizer, stories[:20], batch_tokens=100_000)
    assert one["loss"] == pytest.approx(many["loss"], rel=1e-5)


def test_evaluate_truncates_long_texts(model, tokenizer):
    long_text = " ".join(TEXTS * 20)
    scores = tp.evaluate(model, tokenizer, [long_text], max_length=16)
    assert scores["predicted_tokens"] == 15 and scores["bytes"] < len(long_text)
    with pytest.raises(ValueError, match="at least one non-blank text"):
        tp.evaluate(model, tokenizer, [])


def test_batched_greedy_generation_equals_one_by_one(model, tokenizer):
    prompts = ["Once", "Tom and his dog went to the park and", ""]
    batched = tp.generate(model, tokenizer, prompts, do_sample=False, max_new_tokens=12)
    alone = [tp.generate(model, tokenizer, [p], do_sample=False, max_new_tokens=12)[0] for p in prompts]
    assert batched == alone
    assert all(out.startswith(p) for out, p in zip(batched, prompts))
    assert tp.generate(model, tokenizer, []) == []


def test_sampling_is_seeded_and_leaves_global_rng_alone(model, tokenizer):
    torch.manual_seed(1)
    expected = torch.rand(2)
    torch.manual_seed(1)
    a = tp.generate(model, tokenizer, ["Once"], seed=3, max_new_tokens=10)
    assert torch.equal(torch.rand(2), expected)
    assert a == tp.generate(model, tokenizer, ["Once"], seed=3, max_new_tokens=10)


def test_seeded_sampling_in_concurrent_threads_gives_what_it_gives_alone(model, tokenizer):
    """A page serving two users samples in two threads at once; each seed must still fix its text."""
    from concurrent.futures import ThreadPoolExecutor

    alone = {seed: tp.generate(model, tokenizer, ["Once upon a time"], max_new_tokens=40, seed=seed) for seed in range(4)}
    with ThreadPoolExecutor(4) as pool:
        together = dict(zip(range(4), pool.map(
            lambda seed: tp.generate(model, tokenizer, ["Once upon a time"], max_new_tokens=40, seed=seed), range(4))))
    assert together == alone and len({tuple(v) for v in alone.values()}) > 1


def test_generation_stops_at_eos(model, tokenizer):
    def favour_eos(module, inputs, logits):  # a model whose next token is always EOS
        logits[..., tokenizer.eos_token_id] += 1e4
        return logits

    hook = model.lm_head.register_forward_hook(favour_eos)
    try:
        out = tp.generate(model, tokenizer, ["Once", "Tom"], do_sample=False, max_new_tokens=20)
    finally:
        hook.remove()
    assert out == ["Once", "Tom"]


def test_evaluate_refuses_blank_texts_instead_of_scoring_zero(tokenizer):
    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=640))
    with pytest.raises(ValueError, match="at least one non-blank text"):
        tp.evaluate(model, tokenizer, ["", "   "])
    with_blank = tp.evaluate(model, tokenizer, ["Tom ran home.", ""])
    assert with_blank == tp.evaluate(model, tokenizer, ["Tom ran home."]) and with_blank["loss"] > 0
