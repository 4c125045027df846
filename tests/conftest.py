import copy
import shutil
from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects

import tinypretrain as tp

SHARED_TINYSTORIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories"


@pytest.fixture(scope="session", autouse=True)
def cpu_without_bf16_matmul():
    """Tests, their shared fixtures and the CLI processes they start see a CPU without bf16 matrix instructions,
    whatever this machine has, so device defaults (fp32, eager on CPU) do not depend on where the suite runs; the bf16
    CPU rule's test sets such a CPU."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINYPRETRAIN_CPU_KIND", "avx2")
        yield


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
def llama2_kind_tokenizer(stories):
    """Llama-2's kind of tokenizer: BPE over "▁"-marked words with byte fallback, as transformers' LlamaTokenizer
    builds it (GGUF tokenizer model ``llama``)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator(stories[:500], trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                               show_progress=False))
    spec = json.loads(bpe.to_str())["model"]
    vocab = spec["vocab"] | {f"<0x{b:02X}>": len(spec["vocab"]) + b for b in range(256)}
    return LlamaTokenizer(vocab=vocab, merges=[tuple(m) for m in spec["merges"]])


@pytest.fixture(scope="session")
def tinystories_dir() -> Path:
    if not (SHARED_TINYSTORIES / "train.txt").exists():
        pytest.skip("../shared/data/tinystories is not present")
    return SHARED_TINYSTORIES


class LocalHub:
    """Stands in for HfApi: a repo is a folder under ``root``; upload_folder copies what the hub would receive,
    chosen by huggingface_hub's own pattern filter."""

    def __init__(self, root: Path):
        self.root = root

    def create_repo(self, repo_id, private=False, exist_ok=False):
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, commit_message=None,
                      path_in_repo=""):
        folder = Path(folder_path)
        files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            target = self.root / repo_id / path_in_repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, target)
        return f"local://{repo_id}"


@pytest.fixture
def local_hub(tmp_path) -> LocalHub:
    return LocalHub(tmp_path / "hub")
