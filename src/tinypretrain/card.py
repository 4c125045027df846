"""The model card: a README.md that the hub renders and ``huggingface_hub.ModelCard.load`` parses, filled from
run.json alone, so it never disagrees with the run."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .io import atomic_write_text

# run.json metric -> (model-index metric type, label)
INDEXED_METRICS = {
    "eval_loss": ("loss", "Eval loss (nats/token)"),
    "eval_perplexity": ("perplexity", "Perplexity"),
    "eval_bits_per_byte": ("bits_per_byte", "Bits per byte"),
}
STORY_METRIC_MEANINGS = {
    "eval_eos_rate": "continuations that end with EOS within the token limit (higher: the model knows stories end)",
    "eval_repeat_4gram": "repeated word 4-grams within a continuation (lower: fewer degenerate loops)",
    "eval_distinct_2": "distinct word bigrams across continuations (higher: more varied text)",
    "eval_name_consistency": "continuations that name again a character their opening named (higher: keeps them)",
    "eval_mean_words": "words per continuation",
}
LIMITATIONS = (
    "A tiny model trained only on simple children's stories. It writes short stories in that style and little else: "
    "it knows few facts, follows no instructions, loses the plot over long texts and makes grammar and logic errors "
    "that a larger model would not. It inherits the biases of its training stories (TinyStories was written by "
    "GPT-3.5 and GPT-4). The story metrics are cheap proxies computed offline, not judgements of quality. Meant for "
    "research and teaching, not for any product."
)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's run.json, checked to describe a run (one-line error otherwise)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no run.json; pass the output_dir of a finished tinypretrain run.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it was not written by a finished run.") from None
    if "run" not in record:
        raise ValueError(
            f"{path} comes from a tinypretrain older than model cards (no 'run' section); retrain to get one."
        )
    return record


def model_card(run_dir: str | Path, repo_id: str | None = None) -> ModelCard:
    """The model card of a finished run, from its run.json. ``repo_id`` names the model in the loading snippet
    (default: the folder's path)."""
    record = read_run(run_dir)
    cfg, metrics, run = record["config"], record["metrics"], record["run"]
    data = run["data"]
    name = Path(run_dir).resolve().name
    hub_dataset = data["source"] if data["hub"] else None
    results = [
        EvalResult(
            task_type="text-generation",
            task_name="Causal language modeling",
            dataset_type=hub_dataset or "local",
            dataset_name=hub_dataset or Path(data["source"]).name,
            dataset_split=data.get("eval_split"),
            metric_type=metric,
            metric_name=label,
            metric_value=metrics[key],
        )
        for key, (metric, label) in INDEXED_METRICS.items()
    ]
    card_data = ModelCardData(
        model_name=name,
        license=cfg["license"],
        library_name="transformers",
        pipeline_tag="text-generation",
        language="en",
        tags=["tinypretrain", "llama", "tiny", "stories", "text-generation"],
        datasets=[hub_dataset] if hub_dataset else None,
        eval_results=results,
    )
    body = "\n\n".join(_sections(name, repo_id or str(Path(run_dir).resolve()), record))
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}\n")


def _stamp(text: str) -> str:
    """The card's last line: the hash of the text above it, so a card the user edited (or wrote) is never replaced
    unasked. An HTML comment: the hub does not show it."""
    return f"<!-- written by tinypretrain; sha256 of the text above: {hashlib.sha256(text.encode()).hexdigest()} -->"


def is_unedited_card(path: str | Path) -> bool:
    """Whether ``path`` is a card ``write_model_card`` wrote and nobody has changed since."""
    body, _, last = Path(path).read_text(encoding="utf-8", errors="replace").rstrip("\n").rpartition("\n")
    return last == _stamp(body)


def write_model_card(run_dir: str | Path, repo_id: str | None = None, *, replace_edited: bool = False) -> Path:
    """Write (or rewrite) ``README.md`` in a finished run folder; returns its path. A README.md that tinypretrain
    did not write, or that was edited since, is replaced only with ``replace_edited`` (one-line error otherwise)."""
    path = Path(run_dir) / "README.md"
    text = str(model_card(run_dir, repo_id))
    if path.exists() and not replace_edited and not is_unedited_card(path):
        raise ValueError(
            f"{path} was edited, or not written by tinypretrain; move it aside or pass --force to replace it."
        )
    atomic_write_text(path, f"{text}\n{_stamp(text)}\n")
    return path


def refresh_model_card(run_dir: str | Path, repo_id: str | None = None) -> bool:
    """Rewrite the card unless the user edited it, which is kept with a warning (what a finished run and ``push``
    do); True when it was rewritten."""
    path = Path(run_dir) / "README.md"
    if path.exists() and not is_unedited_card(path):
        logging.getLogger("tinypretrain").warning(
            "%s was edited after tinypretrain wrote it: kept as it is (`tinypretrain card --force` rewrites it).", path
        )
        return False
    write_model_card(run_dir, repo_id, replace_edited=True)  # checked just above
    return True


def _table(rows: list[tuple[str, Any]], head: tuple[str, str]) -> str:
    return "\n".join([f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {k} | {_fmt(v)} |" for k, v in rows)])


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _sections(name: str, model_id: str, record: dict[str, Any]) -> list[str]:
    cfg, metrics, run, versions = record["config"], record["metrics"], record["run"], record["versions"]
    model, data, params = cfg["model_config"], run["data"], run["parameters"]
    story = [(f"`{k}`", metrics[k], meaning) for k, meaning in STORY_METRIC_MEANINGS.items() if k in metrics]
    story_table = "\n".join(
        [
            "| metric | value | fraction of / meaning |",
            "|---|---|---|",
            *(f"| {k} | {_fmt(v)} | {m} |" for k, v, m in story),
        ]
    )
    samples = "\n\n".join(f"**Prompt:** {s['prompt']!r}\n\n{_quote(s['story'])}" for s in run.get("samples", [])[:3])
    tokens = data["train_tokens"]
    schedule = cfg["lr_scheduler_type"] + (
        f", decay over the last {cfg['decay_fraction']:.0%}" if "stable" in cfg["lr_scheduler_type"] else ""
    )
    return [
        f"# {name}",
        f"A {params['total'] / 1e6:.2f}M-parameter LLaMA-style language model (GQA, SwiGLU, RoPE, RMSNorm) trained "
        f"from scratch with tinypretrain on {data['source']}.",
        "## Results\n\n"
        + _table([(label, metrics[key]) for key, (_, label) in INDEXED_METRICS.items()], ("metric", "value"))
        + f"\n\nEach of {data['eval_texts']:,} eval texts ({data['eval']}) is scored whole, as its tokens and EOS; "
        "bits per byte divides the summed loss by the texts' UTF-8 bytes, so it compares across tokenizers.",
        "## Story quality\n\n"
        + (
            f"{cfg['story_samples']} continuations of the first sentence of eval stories, sampled with seed "
            f"{cfg['seed']}, at most {cfg['story_max_new_tokens']} new tokens each.\n\n{story_table}"
            if story
            else "Not computed (story_samples was 0)."
        ),
        f"## Samples\n\n{samples or 'None written (num_samples was 0).'}",
        "## Model\n\n"
        + _table(
            [
                ("hidden size", model["hidden_size"]),
                ("layers", model["num_hidden_layers"]),
                (
                    "attention heads / key-value heads",
                    f"{model['num_attention_heads']} / {model['num_key_value_heads']}",
                ),
                ("MLP size", model["intermediate_size"]),
                ("vocabulary", model["vocab_size"]),
                ("context", model["max_position_embeddings"]),
                ("tied embeddings", model["tie_word_embeddings"]),
                ("parameters", params["total"]),
                ("in embeddings", params["embeddings"]),
                ("in the lm_head (0 when tied)", params["lm_head"]),
                ("in the body", params["body"]),
            ],
            ("", "value"),
        ),
        f"## Tokenizer\n\n{run['tokenizer']['vocab_size']:,} tokens: {run['tokenizer']['origin']}.",
        "## Data\n\n"
        + _table(
            [
                ("source", data["source"]),
                ("training split", data["train_split"]),
                ("training texts", data["train_texts"] if data["train_texts"] is not None else "streamed"),
                ("training tokens", tokens if tokens is not None else "streamed"),
                (
                    "fingerprint of the training tokens",
                    f"`{data['fingerprint']}`" if data["fingerprint"] else "streamed",
                ),
                ("eval texts", f"{data['eval_texts']:,}: {data['eval']}"),
            ],
            ("", "value"),
        ),
        "## Training\n\n"
        + _table(
            [
                ("steps", metrics["train_steps"]),
                ("tokens seen", metrics["tokens_seen"]),
                ("training time (s)", metrics["train_seconds"]),
                ("wall time (s)", metrics["wall_time_s"]),
                ("device", run["device"]),
                ("precision", run["precision"]),
                ("batch (sequences per step)", metrics["global_batch_size"]),
                ("sequence length", cfg["max_length"]),
                ("packing", cfg["packing"]),
                ("init", cfg["init"]),
                ("optimizer", "Muon + AdamW" if cfg["muon"] else cfg["optim"]),
                ("peak learning rate", cfg["learning_rate"]),
                ("schedule", schedule),
                ("warmup", cfg["warmup_steps"]),
                ("weight decay", cfg["weight_decay"]),
                ("time budget", cfg["max_time"] or "none"),
                ("final train loss", metrics["train_loss"]),
            ],
            ("", "value"),
        )
        + "\n\n![Loss curves](loss.png)",
        "## Use it without tinypretrain\n\n```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model_id = {model_id!r}  # this folder, or the hub repo it was pushed to\n"
        "tokenizer = AutoTokenizer.from_pretrained(model_id)\n"
        "model = AutoModelForCausalLM.from_pretrained(model_id)\n"
        "# Stories start after an EOS, as in training.\n"
        'prompt = tokenizer(tokenizer.eos_token + "Once upon a time", return_tensors="pt", add_special_tokens=False)\n'
        "out = model.generate(**prompt, max_new_tokens=200, do_sample=True, top_k=40, temperature=0.8)\n"
        "print(tokenizer.decode(out[0], skip_special_tokens=True))\n```",
        f"## Reproduce\n\n```bash\npip install tinypretrain=={versions['tinypretrain']}\n{run['command']}\n```\n\n"
        + "Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        f"## Limitations\n\n{LIMITATIONS}",
    ]
