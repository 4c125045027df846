"""Hub access that fails fast and says what to do (offline, a hub name costs seconds of retries before a vague
error, and a recipe may name hub data the user never typed), and pushing a finished run to the hub. Reachability and
existence are asked of huggingface_hub itself, and its own errors are turned into one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def looks_local(source: str) -> bool:
    """True for a path the user meant as local: it starts like a path, or its first part is an existing folder
    (``data/smal`` when ``data/`` exists is a typo, not a hub dataset)."""
    first = source.split("/", 1)[0]
    return source.startswith((".", "/", "~")) or ("/" in source and first != "" and Path(first).is_dir())


HUB_TIMEOUT_S = 10  # a hub that does not answer within this is reported, instead of hanging


def require_hub(name: str, field: str, repo_type: str) -> None:
    """Ask the hub (``huggingface_hub.HfApi.repo_info``) whether ``name`` is a ``repo_type`` repo it can serve, and
    raise a one-line ValueError saying what to do when it is not, or when the hub cannot be reached: the loaders
    would otherwise fail after seconds of retries with a vague error. With ``HF_HUB_OFFLINE`` set, the loaders use
    what the cache holds, unchecked."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HTTPError,  # the HTTP client's base error, as huggingface_hub exports it: here, no answer at all
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if _offline_mode():
        return
    try:
        HfApi().repo_info(name, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return  # it exists; the loader will explain the access it needs
    except RepositoryNotFoundError:
        raise ValueError(
            f"{field} {name!r} is not a {repo_type} on the hub (or it is private: log in with `hf auth login`); check "
            f"the name, or set {field} to a local path (--{field} PATH)."
        ) from None
    except HfHubHTTPError as err:
        raise ValueError(f"The hub answered {str(err).splitlines()[0]} for {field} {name!r}; try again later, or set "
                         f"{field} to a local path (--{field} PATH).") from None
    except (OfflineModeIsEnabled, HTTPError) as err:
        raise ValueError(
            f"{field} {name!r} is a hub name, but the hub ({_hub_host()}) cannot be reached "
            f"({type(err).__name__}). Set {field} to a local path (--{field} PATH), or set HF_HUB_OFFLINE=1 to use what your hub cache already "
            "holds."
        ) from None


def _offline_mode() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


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
    from huggingface_hub.errors import HfHubHTTPError, HTTPError
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
        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        refresh_model_card(run_dir, repo_id)  # once the hub answered: a failed push leaves the folder as it was
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(run_dir), allow_patterns=PUSHED_FILES,
                                   ignore_patterns=PUSH_IGNORED, commit_message="Upload a tinypretrain run")
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = {401: "your token is invalid: run `hf auth login`", 403: "your token cannot write to it"}.get(status, "")
        raise ValueError(f"Pushing to {repo_id} failed: {hint or str(err).splitlines()[0]}.") from None
    except HTTPError as err:  # no answer at all
        raise ValueError(f"The hub ({_hub_host()}) cannot be reached ({type(err).__name__}); push again when you are "
                         "online.") from None
    return str(getattr(commit, "commit_url", commit))
