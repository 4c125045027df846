import copy
from pathlib import Path

import pytest

import tinypretrain as tp

SHARED_TINYSTORIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories"


@pytest.fixture(scope="session")
def stories() -> list[str]:
    return tp.generate_stories(3000, seed=1)


@pytest.fixture(scope="session")
def tokenizer(stories):
    """A real byte-level BPE trained on the built-in corpus (pad != eos)."""
    return tp.train_tokenizer(stories, vocab_size=600)


@pytest.fixture(scope="session")
def llama_style_tokenizer(tokenizer):
    """The seed's setup: pad == eos, left padding."""
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def tinystories_dir() -> Path:
    if not (SHARED_TINYSTORIES / "train.txt").exists():
        pytest.skip("../shared/data/tinystories is not present")
    return SHARED_TINYSTORIES
