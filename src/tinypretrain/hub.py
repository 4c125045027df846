"""Hub access that fails fast and says what to do: offline, a hub name costs seconds of retries before a vague
error, and a recipe may name hub data the user never typed."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def looks_local(source: str) -> bool:
    """True for a path the user meant as local: it starts like a path, or its first part is an existing folder
    (``data/smal`` when ``data/`` exists is a typo, not a hub dataset)."""
    first = source.split("/", 1)[0]
    return source.startswith((".", "/", "~")) or ("/" in source and first != "" and Path(first).is_dir())


def require_hub(name: str, field: str) -> None:
    """Raise a one-line ValueError at once when the hub cannot be reached (unless HF_HUB_OFFLINE asks for the cache)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        raise ValueError(
            f"{field} {name!r} is a hub name, but the hub ({host}) cannot be reached (no network?). Set {field} to a "
            f"local path (--{field} PATH), or set HF_HUB_OFFLINE=1 to use what your hub cache already holds."
        ) from None
