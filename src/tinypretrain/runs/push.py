"""Pushing a finished run folder to the hub: its card, weights, tokenizer, record and exports, never checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..train.card import refresh_model_card
from ..utils.hub import hub_host, offline_mode

# What a pushed repo holds: the card, weights, tokenizer and the run's record; never checkpoints or optimizer state.
PUSHED_FILES = [
    "README.md", "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "run.json", "metrics.jsonl", "loss.png",
    "samples.md",
]


PUSH_IGNORED = ["*/*"]  # top-level files only: the patterns' "*" also matches checkpoint-N/model.safetensors
EXPORT_IGNORED = [".*", "*/.*"]  # export/ goes whole (GGUF, ONNX, exports.json), less any unfinished temporary


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
             api: Any = None) -> str:
    """Upload a finished run folder's ``PUSHED_FILES`` and ``export/`` to the hub model repo ``repo_id`` (created if
    needed) with ``huggingface_hub.HfApi.upload_folder``, after rewriting its card to load from ``repo_id`` (a card the user
    edited is pushed as it is); returns the commit URL. ``api`` replaces ``HfApi(token=token)`` (tests pass a local
    stand-in, as the hub can't be reached there)."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HTTPError
    from huggingface_hub.utils import HFValidationError, validate_repo_id


    if not (Path(run_dir) / "model.safetensors").exists() and not any(Path(run_dir).glob("*.safetensors")):
        raise ValueError(f"{run_dir} holds no final model (*.safetensors); pass the output_dir of a finished run.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"--repo_id: {err}".replace("\n", " ")) from None
    if api is None:
        if offline_mode():
            raise ValueError("HF_HUB_OFFLINE is set, so nothing can be pushed; unset it to upload.")
        if token is None and get_token() is None:
            raise ValueError("Not logged in to the hub: run `hf auth login`, or set HF_TOKEN, then push again.")
        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        refresh_model_card(run_dir, repo_id)  # once the hub answered: a failed push leaves the folder as it was
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(run_dir), allow_patterns=PUSHED_FILES,
                                   ignore_patterns=PUSH_IGNORED, commit_message="Upload a tinypretrain run")
        if (Path(run_dir) / "export").is_dir():  # a second commit: one pattern list cannot keep export/ but not the rest
            api.upload_folder(repo_id=repo_id, folder_path=str(Path(run_dir) / "export"), path_in_repo="export",
                              ignore_patterns=EXPORT_IGNORED, commit_message="Upload tinypretrain exports")
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = {401: "your token is invalid: run `hf auth login`", 403: "your token cannot write to it"}.get(status, "")
        raise ValueError(f"Pushing to {repo_id} failed: {hint or str(err).splitlines()[0]}.") from None
    except HTTPError as err:  # no answer at all
        raise ValueError(f"The hub ({hub_host()}) cannot be reached ({type(err).__name__}); push again when you are "
                         "online.") from None
    return str(getattr(commit, "commit_url", commit))
