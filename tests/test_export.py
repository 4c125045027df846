"""`tinypretrain export`: GGUF and ONNX files that load back (transformers, ONNX Runtime, llama.cpp when installed) and
compute what the run's safetensors model computes; bad input gets one line and leaves nothing behind."""

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import tinypretrain as tp
from tinypretrain.cli import main
from tinypretrain.model.build import load_model
from tinypretrain.model.generate import generate
from tinypretrain.runs import export as export_module
from tinypretrain.runs.export import export_run
from tinypretrain.runs.push import push_run
from tinypretrain.train.card import read_exports

TINY = dict(builtin_stories=300, max_length=64, vocab_size=300, per_device_train_batch_size=4, story_samples=0,
            num_samples=0, eval_steps=3, save_steps=6, max_eval_samples=20,
            model_overrides={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "num_key_value_heads": 2, "intermediate_size": 64})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run with the built-in byte-level BPE (GGUF tokenizer model ``gpt2``)."""
    return tp.pretrain(output_dir=str(tmp_path_factory.mktemp("export") / "run"), max_steps=6, **TINY).output_dir


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, llama2_kind_tokenizer):
    """A finished tiny run with a Llama-2-style tokenizer (GGUF tokenizer model ``llama``)."""
    root = tmp_path_factory.mktemp("export-llama")
    llama2_kind_tokenizer.save_pretrained(root / "tokenizer")
    return tp.pretrain(output_dir=str(root / "run"), max_steps=6, tokenizer=str(root / "tokenizer"),
                       **{k: v for k, v in TINY.items() if k != "vocab_size"}).output_dir


def _batch(tokenizer, n=8):
    return tokenizer(tp.generate_stories(n, seed=5), return_tensors="pt", padding=True, truncation=True, max_length=64)


def _diff(a, b, mask):
    return float((torch.as_tensor(a).float() - b.float())[mask.bool()].abs().max())


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_gguf_loads_in_transformers_with_the_same_tokens_and_logits(run, dtype):
    done = export_run(run, "gguf", dtype=dtype)
    path = run / "export" / f"model-{dtype}.gguf"
    assert done.path == str(path) and done.checks["texts_tokenized_equal"] == 200
    model, tokenizer = load_model(run)
    exported = AutoTokenizer.from_pretrained(run / "export", gguf_file=path.name)
    valid = tp.generate_stories(200, seed=9)  # other stories than the export's own check
    assert [exported(t).input_ids for t in valid] == [tokenizer(t).input_ids for t in valid]
    gguf_model = AutoModelForCausalLM.from_pretrained(run / "export", gguf_file=path.name, dtype=torch.float32)
    batch = _batch(tokenizer)
    with torch.no_grad():
        diff = _diff(gguf_model(**batch).logits, model(**batch).logits, batch["attention_mask"])
    assert diff <= {"f32": 1e-4, "f16": 5e-2, "bf16": 0.5}[dtype]
    assert 0 < diff if dtype != "f32" else diff <= 1e-4  # the rounding shows: the file really holds 16-bit weights
    assert any(e["path"] == f"export/model-{dtype}.gguf" for e in read_exports(run))
    assert f"`export/model-{dtype}.gguf`" in (run / "README.md").read_text()


def test_gguf_writes_a_llama2_style_tokenizer_as_llama(llama_run):
    import gguf

    done = export_run(llama_run, "gguf")
    reader = gguf.GGUFReader(done.path)
    model_kind = reader.fields["tokenizer.ggml.model"]
    assert bytes(model_kind.parts[model_kind.data[0]]).decode() == "llama"
    assert done.checks["texts_tokenized_equal"] == 200 and done.checks["max_logit_diff"] <= 1e-4
    _, tokenizer = load_model(llama_run)
    exported = AutoTokenizer.from_pretrained(llama_run / "export", gguf_file="model-f32.gguf")
    texts = [*tp.generate_stories(50, seed=2), "Zoë's café: naïve ☃ 12345"]  # byte fallback too
    assert [exported(t).input_ids for t in texts] == [tokenizer(t).input_ids for t in texts]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("which", ["run", "llama_run"])
def test_llama_cpp_greedy_decoding_equals_transformers(which, request):
    import llama_cpp

    folder = request.getfixturevalue(which)
    path = export_run(folder, "gguf").path
    model, tokenizer = load_model(folder)
    f32 = 0  # GGML_TYPE_F32: llama.cpp keeps its key/value cache in f16 unless told, which moves logits by ~1e-3
    llm = llama_cpp.Llama(path, n_ctx=256, verbose=False, type_k=f32, type_v=f32)
    for story in tp.generate_stories(4, seed=3):
        prompt = " ".join(story.split()[:4])
        ids = [tokenizer.eos_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]
        assert llm.tokenize(prompt.encode(), add_bos=False) == ids[1:]
        llm.reset()
        new = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            new.append(token)
            if token == tokenizer.eos_token_id or len(new) == 32:
                break
        theirs = prompt + tokenizer.decode(new, skip_special_tokens=True)
        assert theirs == generate(model, tokenizer, prompt, temperature=0, max_new_tokens=32)[0]


@pytest.mark.slow
@pytest.mark.parametrize("with_past", [False, True])
def test_onnx_runs_in_onnxruntime_like_the_model(run, tmp_path, with_past):
    import onnxruntime

    output = tmp_path / "onnx"
    done = export_run(run, "onnx", output=output, with_past=with_past)
    assert done.checks["greedy_prompts_equal"] == "4 of 4" and done.checks["max_logit_diff"] <= 1e-4
    # transformers.js' layout: config and tokenizer files beside onnx/model.onnx
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "onnx"} <= {p.name for p in output.iterdir()}
    assert json.loads((output / "config.json").read_text())["use_cache"] is with_past
    AutoTokenizer.from_pretrained(output)
    session = onnxruntime.InferenceSession(str(output / "onnx" / "model.onnx"))
    model, tokenizer = load_model(run)
    batch = _batch(tokenizer, 3)
    feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
    if with_past:
        config = model.config
        feeds["position_ids"] = np.broadcast_to(np.arange(feeds["input_ids"].shape[1]), feeds["input_ids"].shape).copy()
        feeds |= {i.name: np.zeros((3, config.num_key_value_heads, 0, config.head_dim), np.float32)
                  for i in session.get_inputs() if i.name.startswith("past_key_values.")}
    with torch.no_grad():
        assert _diff(session.run(["logits"], feeds)[0], model(**batch).logits, batch["attention_mask"]) <= 1e-4
    assert read_exports(run) == [e for e in read_exports(run) if e["format"] == "gguf"]  # --output elsewhere: not ours


TRANSFORMERS_JS = os.environ.get("TINYPRETRAIN_TRANSFORMERS_JS")  # a folder where npm installed @huggingface/transformers


@pytest.mark.slow
@pytest.mark.skipif(not TRANSFORMERS_JS or not shutil.which("node"),
                    reason="set TINYPRETRAIN_TRANSFORMERS_JS to an npm folder with @huggingface/transformers (.ci/run does)")
def test_transformers_js_decodes_the_onnx_export_like_transformers(run, tmp_path):
    export_run(run, "onnx", output=tmp_path / "models" / "story", with_past=True)
    script = Path(TRANSFORMERS_JS) / "tinypretrain-greedy.mjs"  # node resolves packages from the script's folder
    shutil.copy(Path(__file__).parent / "js" / "greedy.mjs", script)
    model, tokenizer = load_model(run)
    for prompt in ("Once upon a time", "Tom and his dog"):
        out = subprocess.run(["node", str(script), str(tmp_path / "models") + "/", "story", prompt,
                              str(tokenizer.eos_token_id), "32"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        ids = [tokenizer.eos_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]
        with torch.no_grad():
            expected = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=32, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_refuses_bad_input_with_one_line_and_leaves_nothing(run, tmp_path, capsys, monkeypatch):
    cases = [
        ((tmp_path, "--format", "gguf"), "not a model folder"),
        ((run, "--format", "onnx", "--dtype", "bf16"), "--dtype 'bf16' is not supported for onnx"),
        ((run, "--format", "gguf", "--dtype", "q4"), "--dtype 'q4' is not supported for gguf"),
        ((run, "--format", "gguf", "--output", run / "config.json" / "m.gguf"), "config.json"),
        ((run, "--format", "gguf", "--output", tmp_path / "m.bin"), "ending in .gguf"),
    ]
    for args, message in cases:
        code, _, err = _cli(capsys, "export", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 2, err
    foreign = tmp_path / "theirs.gguf"
    foreign.write_text("not ours")
    code, _, err = _cli(capsys, "export", run, "--format", "gguf", "--output", foreign)
    assert code == 2 and "tinypretrain did not write it" in err and foreign.read_text() == "not ours"

    gelu = tmp_path / "gelu"
    shutil.copytree(run, gelu, ignore=shutil.ignore_patterns("checkpoint-*", "export"))
    config = json.loads((gelu / "config.json").read_text())
    (gelu / "config.json").write_text(json.dumps(config | {"hidden_act": "gelu"}))
    code, _, err = _cli(capsys, "export", gelu, "--format", "gguf")
    assert code == 2 and "hidden_act='gelu'" in err and not (gelu / "export").exists()

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    code, _, err = _cli(capsys, "export", run, "--format", "gguf")
    assert code == 2 and 'pip install "tinypretrain[export]"' in err


def test_a_failed_check_keeps_nothing_and_an_older_export_stays(run, capsys, monkeypatch):
    export_run(run, "gguf")
    before = (run / "export" / "model-f32.gguf").read_bytes()

    def broken(*args, **kwargs):
        raise ValueError("The GGUF tokenizer encodes 1 of 200 texts differently")

    monkeypatch.setattr(export_module, "check_gguf", broken)
    code, _, err = _cli(capsys, "export", run, "--format", "gguf")
    assert code == 2 and "differently" in err
    assert (run / "export" / "model-f32.gguf").read_bytes() == before
    assert not [p for p in (run / "export").iterdir() if p.name.startswith(".")]


def test_export_prints_what_it_checked_and_push_uploads_it(run, local_hub, capsys):
    code, out, _ = _cli(capsys, "export", run, "--format", "gguf", "--dtype", "f16")
    assert code == 0 and "model-f16.gguf" in out and "texts_tokenized_equal 200" in out
    push_run(run, "me/tiny", api=local_hub)
    pushed = local_hub.root / "me" / "tiny" / "export"
    assert (pushed / "model-f16.gguf").exists() and (pushed / "exports.json").exists()
    assert not any(p.name.startswith("checkpoint") for p in (local_hub.root / "me" / "tiny").iterdir())
