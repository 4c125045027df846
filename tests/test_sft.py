"""tinypretrain sft: instruction examples (built, read and tokenized), the score, and the command end to end, with
its bad inputs, through the CLI."""

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinypretrain as tp
from tinypretrain.cli import main
from tinypretrain.config.argv import sft_config
from tinypretrain.data.instruct import (
    Request,
    instruct_examples,
    opening,
    request_for,
    request_of,
    request_spans,
    split_instruct_text,
    tokenize_prompt_completion,
)
from tinypretrain.model.instructions import instruction_score, parts_met
from tinypretrain.train.card import _instruction_section

TINY_BASE = ["--builtin_stories", "300", "--max_length", "48", "--vocab_size", "300", "--max_eval_samples", "4",
             "--eval_size", "4", "--num_samples", "0", "--story_samples", "0", "--per_device_train_batch_size", "4",
             "--model_overrides",
             '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}']
TINY_SFT = ["--builtin_stories", "200", "--heldout_prompts", "6", "--max_eval_samples", "4", "--num_samples", "2",
            "--per_device_train_batch_size", "4", "--story_max_new_tokens", "24"]
WORDS = st.lists(st.from_regex(r"[a-z]{3,8}", fullmatch=True), min_size=1, max_size=4, unique=True)


@given(WORDS, st.one_of(st.none(), st.from_regex(r"[A-Z][a-z]{2,6}( [a-z]{2,6}){3,8}\.", fullmatch=True)),
       st.booleans())
def test_a_prompt_says_what_it_asks_for(words, sentence, dialogue):
    request = Request(tuple(words), sentence, dialogue)
    prompt = request.prompt()
    assert prompt.endswith("\nStory:") or prompt == "Story:"
    assert request_of(prompt) == request


@given(st.integers(0, 10_000), st.booleans())
def test_requests_built_from_a_story_are_met_by_that_story(seed, every_part):
    story = tp.generate_stories(1, seed=seed)[0]
    request = request_for(story, random.Random(seed), every_part=every_part)
    met = parts_met(request, story)
    assert met and all(hit == asked for hit, asked in met.values())  # the story itself fulfils all it asks
    assert not any(w[0].isupper() or w in ("the", "and", "was") for w in request.words)
    if every_part:
        assert request.words and request.sentence and request.dialogue == ('"' in story)


@given(st.integers(0, 10_000), st.booleans())
def test_a_first_sentence_request_asks_for_the_sentence_the_story_opens_with(seed, every_part):
    story = " ".join(tp.generate_stories(2, seed=seed))
    request = request_for(story, random.Random(seed), every_part=every_part, first_sentence=True)
    first = opening(story, 1)
    if every_part and 4 <= len(first.split()) <= 20 and '"' not in first:  # a sentence any request may ask for
        assert request.sentence == first
    else:
        assert request.sentence is None or story.startswith(request.sentence)


def test_the_score_says_how_many_prompts_ask_for_each_part(tokenizer):
    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=len(tokenizer)), seed=0)
    prompts = [Request(("dog", "ball", "sun")).prompt(), Request(dialogue=True).prompt(),
               Request(("cat", "hat", "mat"), dialogue=True).prompt()]
    scored = instruction_score(model, tokenizer, prompts, seed=0, max_new_tokens=4)
    assert scored["asked"] == {"words": 2, "dialogue": 2} and scored["parts"].keys() == {"words", "dialogue"}
    assert scored["prompts"] == 3
    record = {"base": "b", "score_before": 0.1, "score_after": 0.2, "heldout_prompts": 3, "truncated_examples": 0,
              "parts": {"before": scored["parts"], "after": scored["parts"]}}
    assert "| part | prompts asking | before | after |" in _instruction_section({**record, "asked": scored["asked"]}, 0,
                                                                              4)
    assert "| part | before | after |" in _instruction_section(record, 0, 4)  # a run folder from before the counts
    assert "ended" not in _instruction_section(record, 0, 4)  # a run folder from before it was recorded
    assert "| stories that ended (EOS) | 1 | 0.5 |" in _instruction_section(
        {**record, "ended": {"before": 1.0, "after": 0.5}}, 0, 4)


@pytest.mark.parametrize("eos_logit, ended", [(1e4, 1.0), (-1e4, 0.0)])
def test_the_score_counts_the_stories_that_end(tokenizer, eos_logit, ended):
    model = tp.build_model(tp.make_llama_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                num_key_value_heads=1, vocab_size=len(tokenizer)), seed=0)
    eos = torch.tensor([tokenizer.eos_token_id])
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits.index_fill(-1, eos, eos_logit))
    scored = instruction_score(model, tokenizer, [Request(("dog", "ball", "sun")).prompt()] * 3, seed=0,
                               max_new_tokens=4)
    assert scored["ended"] == ended


@given(st.integers(0, 10_000), st.integers(1, 6))
def test_an_opening_is_whole_sentences_and_fulfils_its_request(seed, sentences):
    story = " ".join(tp.generate_stories(3, seed=seed))  # long enough to be cut
    kept = opening(story, sentences)
    assert story.startswith(kept) and kept.rstrip('"\u201d\'')[-1] in ".!?"
    rest = story[len(kept):]
    assert not rest or rest[0].isspace()  # cut between sentences, never inside one
    built = instruct_examples([story], seed=seed, sentences=sentences)
    assert built["completion"] == [" " + kept] and built["cut"] == [bool(rest.strip())]
    met = parts_met(request_of(built["prompt"][0]), kept)
    assert all(hit == asked for hit, asked in met.values())  # everything requested is in what is trained on


STORIES = [" ".join(tp.generate_stories(3, seed=i)) for i in range(30)]  # each longer than 2 sentences


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.floats(0, 1), st.floats(0, 1))
def test_a_whole_story_fraction_keeps_a_seeded_share_of_stories_whole(seed, low, high):
    low, high = sorted((low, high))

    def whole(fraction: float) -> list[bool]:
        built = instruct_examples(STORIES, seed, sentences=2, whole_fraction=fraction)
        for story, completion, cut in zip(STORIES, built["completion"], built["cut"]):
            assert completion == " " + (opening(story, 2) if cut else story)  # whole stories keep their EOS
        return [not cut for cut in built["cut"]]

    assert all(h or not w for w, h in zip(whole(low), whole(high)))  # a larger fraction only adds whole stories
    assert not any(whole(0.0)) and all(whole(1.0))
    assert 3 <= sum(whole(0.5)) <= 27  # a seeded share, not all or none (binomial(30, 0.5) tails: ~1e-5)


def test_openings_train_and_score_alike(tmp_path):
    """With completion_sentences, a plain-story dataset's training examples and held-out prompts both come from
    openings, so what is scored was asked of the same kind of text as what was trained on."""
    from tinypretrain.data.prepare import load_texts

    stories = [" ".join(tp.generate_stories(3, seed=i)) for i in range(60)]
    (tmp_path / "train.txt").write_text("<|endoftext|>".join(stories))
    cfg = sft_config(["base", "--dataset", str(tmp_path), "--completion_sentences", "2", "--heldout_prompts", "5"])
    texts = load_texts(cfg)
    assert all(texts.train["cut"]) and len(texts.prompts) == 5
    for completion in texts.train["completion"]:
        assert any(story.startswith(completion.strip()) for story in stories)
    for prompt, text in zip(texts.prompts, texts.eval):
        met = parts_met(request_of(prompt), text[len(prompt):])
        assert all(hit == asked for hit, asked in met.values())
    with pytest.raises(ValueError, match="completion_sentences must be >= 1"):
        sft_config(["base", "--completion_sentences", "0"])


def test_every_part_and_first_sentence_change_training_prompts_only(tmp_path):
    """every_part: each training prompt asks for all its text allows; first_sentence: for the sentence it opens with.
    Held-out prompts keep the seeded mix of parts and sentences, so scores with and without them are on the same
    prompts."""
    from tinypretrain.data.prepare import load_texts

    stories = [" ".join(tp.generate_stories(3, seed=i)) for i in range(80)]
    (tmp_path / "train.txt").write_text("<|endoftext|>".join(stories))
    flags = ["base", "--dataset", str(tmp_path), "--completion_sentences", "3", "--heldout_prompts", "8"]
    mixed, every = load_texts(sft_config(flags)), load_texts(sft_config([*flags, "--every_part", "true"]))
    assert every.prompts == mixed.prompts and every.eval == mixed.eval
    assert sorted(every.train["completion"]) == sorted(mixed.train["completion"])

    def parts(request: Request) -> tuple[bool, bool, bool]:
        return bool(request.words), bool(request.sentence), request.dialogue

    for prompt, completion in zip(every.train["prompt"], every.train["completion"]):
        allowed = request_for(completion.strip(), random.Random(0), every_part=True)
        assert parts(request_of(prompt)) == parts(allowed)
        assert all(hit == asked for hit, asked in parts_met(request_of(prompt), completion).values())

    def asked(texts) -> int:
        return sum(sum(parts(request_of(p))) for p in texts.train["prompt"])

    assert asked(mixed) < asked(every)  # the default is a seeded mix, not every part
    first = load_texts(sft_config([*flags, "--every_part", "true", "--first_sentence", "true"]))
    assert first.prompts == mixed.prompts and first.eval == mixed.eval
    requested = [(request_of(p).sentence, c.strip()) for p, c in zip(first.train["prompt"], first.train["completion"])]
    assert all(completion.startswith(sentence) for sentence, completion in requested if sentence)
    held = [(request_of(p).sentence, t[len(p):].strip()) for p, t in zip(mixed.prompts, mixed.eval)]
    assert any(sentence and not text.startswith(sentence) for sentence, text in held)  # held-out: any sentence
    mixed_whole = load_texts(sft_config([*flags, "--whole_story_fraction", "0.5"]))
    assert mixed_whole.prompts == mixed.prompts and mixed_whole.eval == mixed.eval  # held-out prompts: openings
    assert 0 < mixed_whole.train["cut"].count(False) < len(mixed_whole.train["cut"])
    with pytest.raises(ValueError, match="set completion_sentences too"):
        sft_config(["base", "--whole_story_fraction", "0.5"])
    with pytest.raises(ValueError, match=r"whole_story_fraction must be in \[0, 1\]"):
        sft_config([*flags, "--whole_story_fraction", "1.5"])


def test_tinystories_instruct_texts_split_at_story():
    text = "Features: Dialogue\nWords: quit, oak, gloomy\nRandom sentence: They ran.\nStory: \n\nOnce upon a time."
    prompt, completion = split_instruct_text(text)
    assert prompt == "Features: Dialogue\nWords: quit, oak, gloomy\nRandom sentence: They ran.\nStory:"
    assert completion == " Once upon a time."
    assert request_of(prompt) == Request(("quit", "oak", "gloomy"), "They ran.", True)
    assert split_instruct_text("Once upon a time, a story.") is None
    story = "Tom had a red ball. He threw the ball to his dog. They played all day."
    built = instruct_examples([text, story], seed=0)
    assert built["prompt"][0] == prompt and built["completion"][1].startswith(" Tom had")
    assert built["cut"] == [False, False]
    opened = instruct_examples([text, story], seed=0, sentences=2)  # an Instruct text is never cut
    assert opened["completion"] == [completion, " Tom had a red ball. He threw the ball to his dog."]
    assert opened["cut"] == [False, True]


@given(st.lists(st.tuples(st.text("abc dog\n:", min_size=0, max_size=30), st.text("xyz cat.", min_size=1, max_size=80)
                          .filter(str.strip), st.booleans()), min_size=1, max_size=6),
       st.integers(8, 64))
def test_only_the_completion_is_trained_on(tokenizer, pairs, max_length):
    batch = {"prompt": [p for p, _, _ in pairs], "completion": [c for _, c, _ in pairs],
             "cut": [cut for _, _, cut in pairs]}
    prompts = [[tokenizer.eos_token_id, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p, _, _ in pairs]
    if any(len(p) >= max_length for p in prompts):
        with pytest.raises(ValueError, match="leaves no room for its completion"):
            tokenize_prompt_completion(batch, tokenizer, max_length)
        return
    out = tokenize_prompt_completion(batch, tokenizer, max_length)
    for (_, completion, opening_only), prompt, ids, labels, cut in zip(pairs, prompts, out["input_ids"], out["labels"],
                                                                       out["truncated"]):
        answer = tokenizer(completion, add_special_tokens=False)["input_ids"]
        answer += [] if opening_only else [tokenizer.eos_token_id]  # a story's opening goes on: no EOS
        assert len(ids) == len(labels) <= max_length and ids[: len(prompt)] == prompt
        assert labels[: len(prompt)] == [-100] * len(prompt)  # the prompt is never trained on
        assert labels[len(prompt):] == ids[len(prompt):] == answer[: max_length - len(prompt)]
        assert cut == (len(prompt) + len(answer) > max_length)


@given(st.integers(0, 10_000), st.floats(1.5, 10), st.integers(1, 300))
def test_requested_tokens_weigh_more(tokenizer, seed, weight, room):
    """With request_weight, the completion tokens that spell the request's words, sentence and quotes (and only they)
    weigh ``weight``, the rest of the completion 1 and the prompt 0; ids and labels are those of the unweighted
    rows."""
    story = tp.generate_stories(1, seed=seed)[0]
    request = request_for(story, random.Random(seed), every_part=True)
    completion = " " + story
    batch = {"prompt": [request.prompt()], "completion": [completion]}
    max_length = 1 + len(tokenizer(request.prompt())["input_ids"]) + room  # EOS, the prompt, room for completion
    plain = tokenize_prompt_completion(batch, tokenizer, max_length)
    out = tokenize_prompt_completion(batch, tokenizer, max_length, request_weight=weight)
    assert "loss_weights" not in plain and out["input_ids"] == plain["input_ids"] and out["labels"] == plain["labels"]
    ids, labels, weights = out["input_ids"][0], out["labels"][0], out["loss_weights"][0]
    assert len(weights) == len(ids) and set(weights) <= {0.0, 1.0, weight}
    assert [w == 0 for w in weights] == [label == -100 for label in labels]
    runs, run = [], []  # the text of each stretch of weighted tokens
    for token, w in zip(ids, weights):
        if w == weight:
            run.append(token)
        elif run:
            runs, run = [*runs, tokenizer.decode(run).lower()], []
    runs += [tokenizer.decode(run).lower()] if run else []
    spans = [completion[a:b].lower() for a, b in request_spans(request, completion)]
    cut = out["truncated"][0]  # then the last stretch may be part of a span
    assert all(any(span in r for span in spans) for r in runs[: len(runs) - cut])  # each spells something asked for
    if not cut:  # and everything asked for is weighted
        assert all(any(span in r for r in runs) for span in spans)
        assert all(any(w in r for r in runs) for w in request.words)
        assert not request.sentence or any(request.sentence.lower() in r for r in runs)
        assert sum(r.count('"') for r in runs) == (completion.count('"') if request.dialogue else 0)


def test_an_empty_completion_is_refused(tokenizer):
    with pytest.raises(ValueError, match="empty completion"):
        tokenize_prompt_completion({"prompt": ["Story:"], "completion": ["  "]}, tokenizer, 32)


def test_the_sft_config_takes_base_first_and_keeps_its_own_defaults():
    cfg = sft_config(["runs/base", "--max_time", "60s"])
    assert cfg.base == "runs/base" and cfg.sources["base"] == "explicit"
    assert cfg.tokenizer == "runs/base" and cfg.sources["tokenizer"] == "base"
    # a budget keeps fine-tuning's rate: the budget's rate was tuned for pretraining
    assert cfg.learning_rate == 1e-3 and cfg.sources["learning_rate"] == "default"
    assert sft_config(["--base", "b", "--learning_rate", "2e-3"]).learning_rate == 2e-3


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "base"
    assert main(["train", *TINY_BASE, "--max_steps", "30", "--output_dir", str(out)]) == 0
    return out


@pytest.mark.slow
def test_sft_makes_a_run_folder_with_scores_before_and_after(base, tmp_path, capsys):
    out = tmp_path / "sft"
    assert main(["sft", str(base), *TINY_SFT, "--max_steps", "12", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "instruction score on 6 held-out prompts:" in printed and "before ->" in printed
    assert "stories that ended:" in printed
    record = json.loads((out / "run.json").read_text())
    sft = record["sft"]
    assert sft["base"] == str(base) and sft["heldout_prompts"] == 6
    assert 0 <= sft["score_before"] <= 1 and 0 <= sft["score_after"] <= 1
    assert set(sft["parts"]["after"]) <= {"words", "sentence", "dialogue"}
    assert sft["asked"].keys() == sft["parts"]["after"].keys() and all(1 <= n <= 6 for n in sft["asked"].values())
    assert all(sft["ended"][when] in {n / 6 for n in range(7)} for when in ("before", "after"))
    assert record["run"]["command"].startswith("tinypretrain sft ") and f"--base {base}" in record["run"]["command"]
    assert all("Story:" in s["prompt"] for s in record["run"]["samples"])  # samples answer held-out instructions
    card = (out / "README.md").read_text()
    assert "## Instruction following" in card and "| part | prompts asking | before | after |" in card
    assert "| **score** (mean) | 6 |" in card and "| stories that ended (EOS) | 6 |" in card
    from transformers import AutoModelForCausalLM, AutoTokenizer  # a plain HF model, no tinypretrain needed

    assert AutoModelForCausalLM.from_pretrained(out) and AutoTokenizer.from_pretrained(out)
    assert main(["generate", str(out), "--prompt", "Words: dog, ball\\nStory:", "--max_new_tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("Words: dog, ball\nStory:")


@pytest.mark.slow
def test_prompt_completion_jsonl_trains_and_its_bad_rows_are_one_line(base, tmp_path, capsys):
    rows = [{"prompt": "Words: dog, ball\nStory:", "completion": f" Tom had a dog {i}. The dog liked the ball."}
            for i in range(40)]
    data = tmp_path / "pc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    assert main(["sft", str(base), "--dataset", str(data), *TINY_SFT, "--max_steps", "4", "--output_dir", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["sft"]["parts"]["after"].keys() == {"words"} and record["run"]["data"]["source"] == str(data)
    capsys.readouterr()

    cases = {
        "no columns": ([{"question": "q", "answer": "a"}], "nor a 'text' column of stories"),
        "empty completion": ([{"prompt": "Story:", "completion": " "}] * 20, "empty completion"),
        "prompt too long": ([{"prompt": "Words: " + "dog, " * 80 + "\nStory:", "completion": " A."}] * 20,
                            "leaves no room for its completion"),
    }
    for name, (bad_rows, message) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        bad.write_text("".join(json.dumps(r) + "\n" for r in bad_rows))
        code = main(["sft", str(base), "--dataset", str(bad), *TINY_SFT, "--max_steps", "2", "--max_length", "64",
                     "--output_dir", str(tmp_path / name.replace(" ", "_"))])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (name, err)
    for builder in ("every_part", "first_sentence"):
        code = main(["sft", str(base), "--dataset", str(data), *TINY_SFT, f"--{builder}", "true", "--max_steps", "2",
                     "--output_dir", str(tmp_path / builder)])
        assert code == 2 and f"leave {builder} off for a prompt-completion dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_request_loss_weight_reaches_the_loss(base, tmp_path):
    """The weights go from the rows through Trainer (which drops columns its model does not take) and the collator
    into the loss: the first step's logged loss, before any update, is larger with requested tokens weighing 5."""
    def first_loss(*flags: str) -> float:
        out = tmp_path / "_".join(flags or ("plain",))
        assert main(["sft", str(base), *TINY_SFT, "--max_steps", "2", "--logging_steps", "1", *flags,
                     "--output_dir", str(out)]) == 0
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return next(r["loss"] for r in rows if "loss" in r)

    plain = first_loss()
    assert first_loss("--request_loss_weight", "5") > plain * 1.05
    assert first_loss("--request_loss_weight", "1") == plain
    record = json.loads((tmp_path / "--request_loss_weight_5" / "run.json").read_text())
    assert "--request_loss_weight 5" in record["run"]["command"]
    with pytest.raises(ValueError, match="request_loss_weight must be > 0"):
        sft_config(["base", "--request_loss_weight", "0"])


def test_sft_refuses_a_missing_base_and_packing(tmp_path, capsys):
    assert main(["sft", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sft", "--max_steps", "2"]) == 2
    assert "base is required" in capsys.readouterr().err
    assert main(["sft", "b", "--packing", "pack"]) == 2
    assert "leave packing at 'truncate'" in capsys.readouterr().err


@pytest.mark.slow
def test_sft_learns_what_its_prompts_decide(base, tmp_path):
    """The whole pipeline (masked prompt, completion loss, held-out scoring) on a task the prompt alone decides: after
    tuning, the model writes the word it is asked for; the base does not."""
    rng = random.Random(0)
    words = "dog cat ball tree sun moon fish bird cake hat".split()
    rows = [{"prompt": f"Words: {w}\nStory:", "completion": f" The {w} is here. I like the {w}."}
            for w in (rng.choice(words) for _ in range(400))]
    data = tmp_path / "copy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["sft", str(base), "--dataset", str(data), "--max_steps", "150", "--learning_rate", "3e-3",
                 "--heldout_prompts", "20", "--max_eval_samples", "8", "--num_samples", "0",
                 "--story_max_new_tokens", "12", "--output_dir", str(tmp_path / "sft")]) == 0
    sft = json.loads((tmp_path / "sft" / "run.json").read_text())["sft"]
    assert sft["score_before"] < 0.5 and sft["score_after"] >= 0.9, sft
