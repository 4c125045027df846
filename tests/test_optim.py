"""Muon with AdamW: which parameters go where, one schedule for both, checkpoints that round-trip, and training."""

import io
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

import tinypretrain as tp
from tinypretrain.model.optim import MuonWithAdamW, parameter_groups


def _model():
    return AutoModelForCausalLM.from_config(tp.make_llama_config(hidden_size=32, num_hidden_layers=2,
                                                                 num_attention_heads=2, num_key_value_heads=1,
                                                                 vocab_size=300))


def test_hidden_matrices_get_muon_everything_else_adamw():
    model = _model()
    opt = MuonWithAdamW(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.adamw.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert not muon & adamw and muon | adamw == set(names)
    assert all("layers." in names[i] and "norm" not in names[i] for i in muon)
    assert {names[i] for i in adamw} >= {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}
    for group in opt.param_groups:  # a scheduler's change reaches both optimizers
        group["lr"] = 5e-4
    assert {g["lr"] for g in (*opt.muon.param_groups, *opt.adamw.param_groups)} == {5e-4}


def test_state_round_trips_and_steps_match():
    torch.manual_seed(0)
    model = _model()
    opt = MuonWithAdamW(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    ids = torch.randint(0, 300, (2, 16))

    def step(m, o):
        m(input_ids=ids, labels=ids).loss.backward()
        o.step()
        o.zero_grad()

    step(model, opt)
    twin = _model()
    twin.load_state_dict(model.state_dict())
    twin_opt = MuonWithAdamW(twin, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    saved = io.BytesIO()  # through bytes, as a checkpoint does (a state_dict shares its tensors)
    torch.save(opt.state_dict(), saved)
    saved.seek(0)
    twin_opt.load_state_dict(torch.load(saved, weights_only=True))
    step(model, opt)
    step(twin, twin_opt)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_pretrain_with_muon_learns(tmp_path):
    result = tp.pretrain(output_dir=str(tmp_path / "m"), muon=True, max_steps=12, builtin_stories=300, max_length=32,
                         vocab_size=300, per_device_train_batch_size=4, logging_steps=1, num_samples=0,
                         max_eval_samples=8, eval_size=8,
                         model_overrides={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                          "num_key_value_heads": 1})
    losses = [json.loads(line)["loss"] for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < losses[0] - 0.3
    assert json.loads((result.output_dir / "run.json").read_text())["config"]["muon"] is True


def test_parameter_groups_give_each_part_its_rate_and_cover_every_parameter_once():
    model = _model()
    groups = parameter_groups(model, 1e-3, 0.1, embedding_lr=3e-3, head_lr=5e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen))
    assert [names[id(p)] for p in groups["embeddings"]["params"]] == ["model.embed_tokens.weight"]
    assert [names[id(p)] for p in groups["head"]["params"]] == ["lm_head.weight"]
    assert (groups["embeddings"]["lr"], groups["head"]["lr"], groups["hidden"]["lr"]) == (3e-3, 5e-4, 1e-3)
    assert groups["vectors"]["weight_decay"] == 0.0 and groups["hidden"]["weight_decay"] == 0.1
    tied = AutoModelForCausalLM.from_config(tp.make_llama_config(hidden_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=2, num_key_value_heads=1,
                                                                 vocab_size=300, tie_word_embeddings=True))
    assert "head" not in parameter_groups(tied, 1e-3, 0.1, head_lr=5e-4)  # tied: the embeddings' group rules


@pytest.mark.parametrize("muon", [False, True])
def test_a_run_trains_each_part_at_its_own_rate_through_the_schedule(tmp_path, muon):
    seen = []

    class Rates(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            rates = sorted({g["lr"] for g in optimizer.param_groups})
            seen.append([round(r / rates[1], 6) for r in rates])  # relative to the hidden matrices' rate

    tp.pretrain(output_dir=str(tmp_path / "r"), max_steps=4, warmup_steps=2, builtin_stories=200, max_length=32,
                vocab_size=300, per_device_train_batch_size=2, num_samples=0, story_samples=0, max_eval_samples=4,
                eval_size=4, embedding_lr=4e-3, head_lr=5e-4, learning_rate=1e-3, muon=muon,
                model_overrides={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "num_key_value_heads": 1}, callbacks=[Rates()])
    assert len(seen) == 4 and all(ratios == [0.5, 1.0, 4.0] for ratios in seen)  # warmup scales them alike
    record = json.loads((tmp_path / "r" / "run.json").read_text())["config"]
    assert (record["embedding_lr"], record["head_lr"]) == (4e-3, 5e-4)

