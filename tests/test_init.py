import math

import pytest
import torch

import tinypretrain as tp


@pytest.fixture(scope="module")
def config():
    return tp.make_llama_config(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=2000)


def _matrices(model):
    return {n: p for n, p in model.named_parameters() if p.dim() > 1}


def test_kaiming_statistics(config):
    model = tp.build_model(config, init="kaiming", seed=0)
    for name, w in _matrices(model).items():
        fan_in = w.shape[1]
        bound = math.sqrt(6 / fan_in)
        assert w.abs().max().item() <= bound + 1e-6, name
        assert w.abs().max().item() > 0.9 * bound, name  # uniform fills its range
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05), name
    for name, p in model.named_parameters():
        if "norm" in name:
            assert torch.all(p == 1), name  # norms untouched


def test_normal_statistics(config):
    model = tp.build_model(config, init="normal", seed=0)
    for name, w in _matrices(model).items():
        assert w.mean().item() == pytest.approx(0, abs=2e-3), name
        assert w.std().item() == pytest.approx(0.02, rel=0.05), name


@pytest.mark.parametrize("init", ["kaiming", "normal"])
def test_deterministic_with_seed(config, init):
    a, b, c = (tp.build_model(config, init=init, seed=s) for s in (7, 7, 8))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if pa.dim() > 1:
            assert not torch.equal(pa, pc), name


def test_init_survives_hf_reinitialisation(config):
    model = tp.build_model(config, init="kaiming", seed=0)
    before = {n: p.clone() for n, p in model.named_parameters()}
    model.init_weights()
    model.post_init()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_init_does_not_touch_global_rng(config):
    model = tp.build_model(config, seed=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tp.kaiming_init(model, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_init(config):
    with pytest.raises(ValueError, match="Unknown init 'xavier'"):
        tp.build_model(config, init="xavier")
