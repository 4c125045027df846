import pytest
from transformers import AutoModelForCausalLM, LlamaConfig

import tinypretrain as tp


@pytest.mark.parametrize("hidden,ffn", [(256, 768), (64, 256), (768, 2048), (1024, 2816), (128, 384)])
def test_ffn_rounds_up_to_multiple(hidden, ffn):
    assert tp.ffn_size(hidden) == ffn
    assert tp.make_llama_config(hidden_size=hidden, num_attention_heads=4, num_key_value_heads=2).intermediate_size == ffn


def test_seed_formula_differs_only_at_exact_multiples():
    seed = lambda h: (int(h * 8 / 3 / 128) + 1) * 128  # noqa: E731
    assert seed(256) == tp.ffn_size(256) == 768
    assert seed(768) == 2176 != tp.ffn_size(768)


def test_default_is_the_seed_model():
    config = tp.make_llama_config()
    assert isinstance(config, LlamaConfig)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (256, 4, 16)
    assert (config.num_key_value_heads, config.vocab_size, config.intermediate_size) == (8, 32000, 768)
    assert config.tie_word_embeddings is False and config.max_position_embeddings == 2048
    model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 19_532_032
    counts = tp.count_parameters(model)
    assert counts.total == 19_532_032
    assert counts.embeddings == counts.lm_head == 32000 * 256
    assert counts.body == 19_532_032 - 2 * 32000 * 256
    assert len(counts.table) == len(list(model.parameters()))
    assert "lm_head.weight" in str(counts)


def test_tied_embeddings_counted_once():
    model = AutoModelForCausalLM.from_config(tp.make_llama_config(preset="cpu-2m", tie_word_embeddings=True))
    counts = tp.count_parameters(model)
    assert counts.lm_head == 0
    assert counts.total == sum(p.numel() for p in model.parameters())


def test_presets():
    names = tp.list_presets()
    assert {"seed-20m", "cpu-2m"} <= set(names)
    assert tp.make_llama_config(preset="seed-20m").to_dict() == tp.make_llama_config().to_dict()
    grid = [n for n in names if n.startswith("paper-")]
    assert len(grid) == 30 and "paper-h64-l1" in grid and "paper-h1024-l12" in grid
    for name in grid:
        config = tp.make_llama_config(preset=name)
        assert config.hidden_size % config.num_attention_heads == 0
    config = tp.make_llama_config(preset="paper-h512-l8")
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (512, 8, 1408)


def test_explicit_arguments_win_over_preset():
    config = tp.make_llama_config(preset="cpu-2m", vocab_size=1000, rope_theta=500.0)
    assert config.vocab_size == 1000 and config.hidden_size == 128
    assert config.rope_parameters["rope_theta"] == 500.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 250}, "not divisible by num_attention_heads"),
        ({"num_key_value_heads": 5}, "not divisible by num_key_value_heads"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"hidden_size": "cpu-2m"}, r"hidden_size must be a positive integer, got 'cpu-2m' \(a preset\? pass preset="),
        ({"ffn_multiple_of": 0}, "ffn_multiple_of must be a positive integer"),
        ({"num_hidden_layers": -1}, "num_hidden_layers must be a positive integer"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
        ({"intermediate_size": -5}, "intermediate_size must be a positive integer"),
        ({"preset": "gpt-5"}, "Unknown preset 'gpt-5'"),
    ],
)
def test_invalid_shapes_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tp.make_llama_config(**kwargs)
