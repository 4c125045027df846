"""``tinypretrain play``: a Gradio page to try finished runs side by side, one column per run, streaming tokens.

Gradio is an optional extra (``pip install "tinypretrain[play]"``): it is imported only when a page is built. The
page's ``generate`` endpoint takes (prompt, max_new_tokens, temperature, top_p, seed) and returns one text per run,
so ``gradio_client.Client(url).predict(..., api_name="/generate")`` works; the same seed gives the same texts."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from threading import Thread
from typing import Any

from ..data.instruct import Request
from ..model.build import load_model
from ..model.generate import SAMPLING, continue_prompts
from ..train.card import read_run

PLAY_EXTRA = 'pip install "tinypretrain[play]"'


@dataclass
class PlayRun:
    """A run on the page: its model and tokenizer, and the header of its column."""

    name: str
    model: Any
    tokenizer: Any
    header: str
    sft: bool


def load_runs(run_dirs: list[str]) -> list[PlayRun]:
    """Each run folder's model, tokenizer and header (name, parameters, data, eval bits/byte); a folder that is no
    finished run, or lacks a model or tokenizer, is refused with one line."""
    runs = []
    for run_dir in run_dirs:
        record = read_run(run_dir)
        model, tokenizer = load_model(run_dir)
        name = Path(run_dir).resolve().name
        params, data = record["run"]["parameters"]["total"], record["run"]["data"]["source"]
        header = (f"{name}: {params / 1e6:.2f}M parameters, {Path(data).name or data}, "
                  f"{record['metrics']['eval_bits_per_byte']:.3f} bits/byte")
        runs.append(PlayRun(name, model.eval(), tokenizer, header, "sft" in record))
    return runs


def stream_texts(runs: list[PlayRun], prompt: str, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int) -> Iterator[tuple[str, ...]]:
    """Every run's continuation of ``prompt``, yielded as the tokens come: the runs one after another, each seeded
    with ``seed`` (sequential, so that one run's sampling never draws from another's random numbers)."""
    from transformers import TextIteratorStreamer

    texts = [""] * len(runs)
    for i, run in enumerate(runs):
        streamer = TextIteratorStreamer(run.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature), "top_p": float(top_p),
                  "seed": int(seed), "streamer": streamer}
        worker = Thread(target=continue_prompts, args=(run.model, run.tokenizer, [prompt]), kwargs=kwargs)
        worker.start()
        for piece in streamer:
            texts[i] += piece
            yield tuple(texts)
        worker.join()
    yield tuple(texts)


def play_app(runs: list[PlayRun]) -> Any:
    """The Gradio Blocks page for ``runs``."""
    if importlib.util.find_spec("gradio") is None:
        raise ValueError(f"tinypretrain play needs Gradio: {PLAY_EXTRA}")
    import gradio as gr

    def generate(prompt: str, max_new_tokens: int, temperature: float, top_p: float, seed: int):
        yield from stream_texts(runs, prompt.replace("\\n", "\n"), max_new_tokens, temperature, top_p, seed)

    with gr.Blocks(title="tinypretrain play") as app:
        gr.Markdown("# tinypretrain play\nThe same prompt, settings and seed for every run; same seed, same text.")
        prompt = gr.Textbox(label="Prompt", value="Once upon a time", lines=3, elem_id="prompt")
        if any(run.sft for run in runs):
            with gr.Accordion("Instruction builder (sft runs)", open=True):
                with gr.Row():
                    words = gr.Textbox(label="Words", placeholder="dog, ball, happy", elem_id="words")
                    sentence = gr.Textbox(label="Sentence", placeholder="The dog ran after the ball.")
                    dialogue = gr.Checkbox(label="Dialogue")
                build = gr.Button("Build prompt", elem_id="build")
            build.click(_instruction_prompt, inputs=[words, sentence, dialogue], outputs=prompt, api_name="build_prompt")
        with gr.Row():
            max_new_tokens = gr.Slider(8, 512, value=SAMPLING.max_new_tokens, step=8, label="max_new_tokens")
            temperature = gr.Slider(0, 2, value=SAMPLING.temperature, step=0.05, label="temperature (0: greedy)")
            top_p = gr.Slider(0.05, 1, value=SAMPLING.top_p, step=0.05, label="top_p")
            seed = gr.Number(value=0, precision=0, label="seed")
        button = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row():
            outputs = [gr.Textbox(label=run.header, lines=14, elem_id=f"run-{i}") for i, run in enumerate(runs)]
        button.click(generate, inputs=[prompt, max_new_tokens, temperature, top_p, seed], outputs=outputs,
                     api_name="generate")
    return app


def _instruction_prompt(words: str, sentence: str, dialogue: bool) -> str:
    chosen = tuple(w.strip() for w in words.split(",") if w.strip())
    return Request(chosen, sentence.strip() or None, bool(dialogue)).prompt()


def serve(run_dirs: list[str], host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Check every run, then serve the page on ``host:port`` (127.0.0.1: this machine only); returns the app."""
    runs = load_runs(run_dirs)  # every refusal comes before a server starts
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page reports nowhere unless you ask
    app = play_app(runs)
    app.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True)
    return app
