"""Model options that stay plain HF models: zero-initialised output projections, QK-norm (as Qwen3), ReLU², the
attention implementation and residual dropout."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, TrainerCallback

import tinypretrain as tp
from tinypretrain.model.attention import sdpa_fp32_attention
from tinypretrain.model.build import with_residual_dropout
from tinypretrain.runs.export import export_run

TINY = dict(builtin_stories=200, max_length=32, vocab_size=300, per_device_train_batch_size=2, num_samples=0,
            story_samples=0, max_eval_samples=4, eval_size=4,
            model_overrides={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "num_key_value_heads": 1})


def test_zero_init_projections_start_each_block_as_the_identity_and_still_learn(tmp_path):
    result = tp.pretrain(output_dir=str(tmp_path / "z"), max_steps=3, zero_init_projections=True, **TINY)
    fresh = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=320), init="kaiming", seed=0,
                           zero_projections=True)
    for name, param in fresh.named_parameters():
        assert (param.abs().sum() == 0) == name.endswith(("o_proj.weight", "down_proj.weight")), name
    trained = AutoModelForCausalLM.from_pretrained(result.output_dir)  # a plain HF Llama
    assert all(p.abs().sum() > 0 for n, p in trained.named_parameters() if n.endswith("down_proj.weight"))


def test_qk_norm_trains_a_qwen3_model_that_loads_without_tinypretrain(tmp_path, capsys):
    result = tp.pretrain(output_dir=str(tmp_path / "q"), max_steps=3, qk_norm=True, **TINY)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["hidden_size"] == 32 and config["num_key_value_heads"] == 1
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    names = {name for name, _ in model.named_parameters()}
    assert "model.layers.0.self_attn.q_norm.weight" in names and "model.layers.1.self_attn.k_norm.weight" in names
    assert json.loads((result.output_dir / "run.json").read_text())["config"]["qk_norm"] is True
    with pytest.raises(ValueError, match="model_type='qwen3'"):
        export_run(result.output_dir, "gguf")


def test_relu_squared_is_a_model_override_that_loads_without_tinypretrain(tmp_path):
    overrides = {**TINY["model_overrides"], "hidden_act": "relu2"}
    result = tp.pretrain(output_dir=str(tmp_path / "r"), max_steps=2, **{**TINY, "model_overrides": overrides})
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert model.config.hidden_act == "relu2"
    assert type(model.model.layers[0].mlp.act_fn).__name__ == "ReLUSquaredActivation"


@pytest.mark.parametrize("implementation", ["eager", "sdpa_fp32"])
def test_attn_implementation_trains_with_it_and_saves_a_model_that_loads_either_way(tmp_path, implementation):
    seen = []

    class AttentionSeen(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append(model.config._attn_implementation)  # transformers' documented switch, read back

    result = tp.pretrain(output_dir=str(tmp_path / "a"), max_steps=2, attn_implementation=implementation,
                         callbacks=[AttentionSeen()], **TINY)
    assert seen == [implementation, implementation]
    assert json.loads((result.output_dir / "run.json").read_text())["sources"]["attn_implementation"] == "explicit"
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    loaded = AutoModelForCausalLM.from_pretrained(result.output_dir)  # the saved config names no implementation
    assert loaded.config._attn_implementation == "sdpa"
    trained = result.model.float().eval()
    torch.testing.assert_close(loaded(ids).logits, trained(ids).logits, atol=1e-4, rtol=1e-4)


def test_sdpa_fp32_runs_the_fused_kernel_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 9, 8, dtype=torch.bfloat16) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = sdpa_fp32_attention(module, query, key, value, None, scaling=8**-0.5)
    expected = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), is_causal=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected.transpose(1, 2).to(torch.bfloat16))  # transformers' [B, T, H, D]


def test_residual_dropout_drops_block_outputs_while_training_only_and_saves_a_plain_llama(tmp_path):
    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=320), init="kaiming", seed=0)
    outputs = {}
    with_residual_dropout(model, 0.5)
    for name, module in model.named_modules():
        if name.endswith(("o_proj", "down_proj", "up_proj")):  # hooks run in order: these see the dropped output
            module.register_forward_hook(lambda m, i, out, name=name: outputs.__setitem__(name, out))
    ids = torch.tensor([[1, 5, 9, 14, 3, 7] * 8])
    model.train()
    model(ids)
    for name, out in outputs.items():
        zeros = (out == 0).float().mean().item()
        assert (0.4 < zeros < 0.6) if name.endswith(("o_proj", "down_proj")) else zeros == 0, name
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)

    result = tp.pretrain(output_dir=str(tmp_path / "d"), max_steps=2, residual_dropout=0.1, **TINY)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and not any("dropout" in k and v for k, v in config.items())
    loaded = AutoModelForCausalLM.from_pretrained(result.output_dir)
    torch.testing.assert_close(loaded(ids).logits, result.model.float().eval()(ids).logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="residual_dropout must be at least 0 and below 1, got 1"):
        tp.PretrainConfig(residual_dropout=1)
