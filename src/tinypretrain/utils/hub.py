"""Hub access that fails fast and says what to do (offline, a hub name costs seconds of retries before a vague
error, and a recipe may name hub data the user never typed). Reachability and existence are asked of huggingface_hub
itself, and its own errors are turned into one line."""

from __future__ import annotations

import os
from pathlib import Path
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

    if offline_mode():
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
            f"{field} {name!r} is a hub name, but the hub ({hub_host()}) cannot be reached "
            f"({type(err).__name__}). Set {field} to a local path (--{field} PATH), or set HF_HUB_OFFLINE=1 to use what your hub cache already "
            "holds."
        ) from None


def offline_mode() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"





