"""tinypretrain: pretrain tiny LLaMA-style language models (TinyStories) with transformers, datasets and accelerate."""

from .config.llama import ffn_size, list_presets, make_llama_config
from .config.pretrain import PretrainConfig
from .config.settings import resolve_settings
from .config.sft import SFTConfig
from .data.collate import causal_collator
from .data.corpus import generate_stories, story_dataset
from .data.load import load_text_dataset
from .data.pack import pack_dataset, pack_sequences, pack_stream, tokenize_truncate
from .data.stream import BlockStream
from .data.tokenizer import load_tokenizer, train_tokenizer
from .model.build import ParameterCount, build_model, count_parameters
from .model.evaluate import evaluate, story_quality
from .model.generate import Continuation, continue_prompts, generate
from .model.init import init_model, kaiming_init, normal_init
from .model.loss import causal_lm_loss
from .model.optim import MuonWithAdamW
from .runs.sweep import sweep
from .train.run import PretrainResult, pretrain
from .train.signals import TrainingInterrupted
from .train.trainer import PretrainTrainer, TrainingDivergedError
from .version import __version__ as __version__  # re-exported

__all__ = [
    "BlockStream",
    "PretrainConfig",
    "PretrainResult",
    "SFTConfig",
    "MuonWithAdamW",
    "PretrainTrainer",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "causal_lm_loss",
    "evaluate",
    "story_quality",
    "Continuation",
    "continue_prompts",
    "generate",
    "pretrain",
    "resolve_settings",
    "ParameterCount",
    "build_model",
    "causal_collator",
    "count_parameters",
    "ffn_size",
    "generate_stories",
    "init_model",
    "kaiming_init",
    "list_presets",
    "load_text_dataset",
    "load_tokenizer",
    "make_llama_config",
    "normal_init",
    "pack_dataset",
    "pack_sequences",
    "pack_stream",
    "story_dataset",
    "sweep",
    "tokenize_truncate",
    "train_tokenizer",
]
