"""Hub access that fails fast and says what to do (offline, a hub name costs seconds of retries before a vague
error, and a recipe may name hub data the user never typed), and pushing a finished run to the hub."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def looks_local(source: str) -> bool:
    """True for a path the user meant as local: it starts like a path, or its first part is an existing folder
    (``data/smal`` when ``data/`` exists is a typo, not a hub dataset)."""
    first = source.split("/", 1)[0]
    return source.startswith((".", "/", "~")) or ("/" in source and first != "" and Path(first).is_dir())


def require_hub(name: str, field: str) -> None:
    """Raise a one-line ValueError at once when the hub cannot be reached (unless HF_HUB_OFFLINE asks for the cache)."""
    if _offline_mode():
        return
    host = _unreachable_hub()
    if host:
        raise ValueError(
            f"{field} {name!r} is a hub name, but the hub ({host}) cannot be reached (no network?). Set {field} to a "
            f"local path (--{field} PATH), or set HF_HUB_OFFLINE=1 to use what your hub cache already holds."
        )


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _unreachable_hub() -> str | None:
    """The hub's host name if it cannot be reached within seconds, else None."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        return host
    return None


# What a pushed repo holds: the card, weights, tokenizer and the run's record; never checkpoints or optimizer state.
PUSHED_FILES = [
    "README.md", "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "run.json", "metrics.jsonl", "loss.png",
    "samples.md",
]

PUSH_IGNORED = ["*/*"]  # top-level files only: the patterns' "*" also matches checkpoint-N/model.safetensors


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
             api: Any = None) -> str:
    """Upload a finished run folder's ``PUSHED_FILES`` to the hub model repo ``repo_id`` (created if needed) with
    ``huggingface_hub.HfApi.upload_folder``, after rewriting its card to load from ``repo_id`` (a card the user
    edited is pushed as it is); returns the commit URL. ``api`` replaces ``HfApi(token=token)`` (tests pass a local
    stand-in, as the hub can't be reached there)."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from .card import refresh_model_card

    if not (Path(run_dir) / "model.safetensors").exists() and not any(Path(run_dir).glob("*.safetensors")):
        raise ValueError(f"{run_dir} holds no final model (*.safetensors); pass the output_dir of a finished run.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"--repo_id: {err}".replace("\n", " ")) from None
    if api is None:
        if _offline_mode():
            raise ValueError("HF_HUB_OFFLINE is set, so nothing can be pushed; unset it to upload.")
        if token is None and get_token() is None:
            raise ValueError("Not logged in to the hub: run `hf auth login`, or set HF_TOKEN, then push again.")
        host = _unreachable_hub()
        if host:
            raise ValueError(f"The hub ({host}) cannot be reached (no network?); push again when you are online.")
        api = HfApi(token=token)
    refresh_model_card(run_dir, repo_id)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(run_dir), allow_patterns=PUSHED_FILES,
                                   ignore_patterns=PUSH_IGNORED, commit_message="Upload a tinypretrain run")
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = {401: "your token is invalid: run `hf auth login`", 403: "your token cannot write to it"}.get(status, "")
        raise ValueError(f"Pushing to {repo_id} failed: {hint or str(err).splitlines()[0]}.") from None
    return str(getattr(commit, "commit_url", commit))
