"""tinypretrain: pretrain tiny LLaMA-style language models (TinyStories) with transformers, datasets and accelerate."""

from .budget import TrainingInterrupted
from .collate import causal_collator
from .config import ffn_size, list_presets, make_llama_config
from .corpus import generate_stories, story_dataset
from .data import pack_dataset, pack_sequences, pack_stream, tokenize_truncate
from .evaluate import evaluate, story_quality
from .generate import Continuation, continue_prompts, generate
from .init import init_model, kaiming_init, normal_init
from .load import load_text_dataset
from .loss import causal_lm_loss
from .model import ParameterCount, build_model, count_parameters
from .optim import MuonWithAdamW
from .pretrain_config import PretrainConfig
from .settings import resolve_settings
from .sweep import sweep
from .tokenizer import load_tokenizer, train_tokenizer
from .train import PretrainResult, pretrain
from .trainer import PretrainTrainer, TrainingDivergedError
from .version import __version__ as __version__  # re-exported

__all__ = [
    "PretrainConfig",
    "PretrainResult",
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
