"""Hub ids resolved through the local Hugging Face cache only: no download at run
time (HF_HUB_OFFLINE semantics), so a model is either on disk or an error."""
from __future__ import annotations

import re

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    """"org/name": one slash, no leading dot or slash, nothing path-like."""
    return bool(_HUB_ID.match(name)) and ".." not in name


def cached_snapshot(repo_id: str) -> str | None:
    """The folder of the repo's cached snapshot (its main revision), or None when
    the local HF cache (HF_HUB_CACHE / HF_HOME) does not hold it."""
    if not looks_like_hub_id(repo_id):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None
