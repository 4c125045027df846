"""Story-quality metrics: each catches what its docstring says, on texts made by hand and by hypothesis."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tinypretrain as tp
from tinypretrain.model.evaluate import (
    character_names,
    distinct_2,
    eos_rate,
    mean_words,
    name_consistency,
    repeat_4gram,
    story_opening,
    words,
)
from tinypretrain.model.generate import continue_prompts

WORDS = st.lists(st.sampled_from(["the", "dog", "ran", "a", "big", "red", "ball", "Lily", "saw", "sun"]), max_size=40)


def test_a_looping_text_repeats_and_a_fresh_one_does_not():
    loop = "and they played and they played and they played and they played and they played"
    fresh = "Lily found a shiny red ball under the old tree near her house"
    assert repeat_4gram([loop]) > 0.7
    assert repeat_4gram([fresh]) == 0.0
    assert repeat_4gram([loop, fresh]) == pytest.approx(repeat_4gram([loop]) / 2)


@given(st.lists(WORDS, min_size=1, max_size=5))
def test_repetition_and_diversity_are_fractions(texts):
    texts = [" ".join(t) for t in texts]
    assert 0.0 <= repeat_4gram(texts) < 1.0
    assert 0.0 <= distinct_2(texts) <= 1.0


@given(WORDS.filter(lambda w: len(w) >= 5), st.integers(2, 6))
def test_saying_the_same_text_again_halves_diversity_or_more(text, copies):
    text = " ".join(text)
    assert distinct_2([text] * copies) <= distinct_2([text]) / copies + 1e-9
    assert repeat_4gram([" ".join([text] * copies)]) >= repeat_4gram([text])


def test_distinct_2_counts_bigrams_pooled_across_texts():
    assert distinct_2(["a b c", "a b d"]) == pytest.approx(3 / 4)  # (a b) twice, (b c), (b d)
    assert distinct_2(["one", ""]) == 0.0


def test_a_text_that_never_ends_scores_zero_eos_rate():
    assert eos_rate([False] * 8) == 0.0
    assert eos_rate([True, False, True, True]) == 0.75
    assert eos_rate([]) == 0.0


def test_character_names_skip_sentence_and_quote_starts():
    assert character_names("Once upon a time, there was a girl named Lily.") == {"lily"}
    assert character_names('Tom said, "Look, Ben!" Then Sue and Max\'s dog ran.') == {"ben", "sue", "max"}
    assert character_names("One day, I went out.") == set()


def test_name_consistency_counts_only_prompts_that_name_someone():
    prompts = ["There was a girl named Lily.", "A dog named Max ran.", "It was a sunny day."]
    assert name_consistency(prompts, ["Lily smiled.", "The dog was happy.", "Lily came."]) == 0.5
    assert name_consistency(prompts[2:], ["Anything."]) is None


@given(WORDS)
def test_mean_words_counts_words(text):
    assert mean_words([" ".join(text), ""]) == len(text) / 2
    assert words(" ".join(text)) == [w.lower() for w in text]


def test_story_opening_is_the_first_sentence():
    assert story_opening("Once upon a time, there was a cat. The cat was big.") == "Once upon a time, there was a cat."
    assert story_opening("  no full stop here") == "no full stop here"
    assert story_opening(" ".join(["word"] * 50) + ".") == " ".join(["word"] * 30)


@pytest.fixture(scope="module")
def model(tokenizer):
    config = tp.make_llama_config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
    )
    return tp.build_model(config, seed=0).eval()


class _Scripted(torch.nn.Module):
    """A stand-in model whose generate() appends fixed tokens: row 0 ends (EOS, then padding), row 1 is cut off."""

    def __init__(self, new_tokens):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.new_tokens = torch.tensor(new_tokens)

    def generate(self, input_ids, **kwargs):
        return torch.cat([input_ids, self.new_tokens], dim=1)


def test_continuations_report_whether_they_ended(tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    (word,) = tokenizer(" the", add_special_tokens=False)["input_ids"]
    scripted = _Scripted([[word, eos, pad], [word, word, word]])
    ended, cut = continue_prompts(scripted, tokenizer, ["Tom saw", "Sue"], max_new_tokens=3)
    assert ended == tp.Continuation(" the", ended=True)
    assert cut == tp.Continuation(" the the the", ended=False)


def test_story_quality_is_seeded_and_bounded(model, tokenizer, stories):
    one = tp.story_quality(model, tokenizer, stories, samples=4, max_new_tokens=20, seed=3)
    assert one == tp.story_quality(model, tokenizer, stories, samples=4, max_new_tokens=20, seed=3)
    assert set(one) <= {"eos_rate", "repeat_4gram", "distinct_2", "name_consistency", "mean_words"}
    assert {"eos_rate", "repeat_4gram", "distinct_2", "mean_words"} <= set(one)
    with pytest.raises(ValueError, match="non-blank"):
        tp.story_quality(model, tokenizer, ["", "  "])
