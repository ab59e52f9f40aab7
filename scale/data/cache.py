"""Where the project keeps what it builds or fetches once: token blocks, BPE tokenizers, Hub snapshots,
the text8 archive; and whether the environment forbids fetching it."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$IMDM_CACHE`, else ~/.cache/imdm-lab."""
    return Path(os.environ.get("IMDM_CACHE") or Path.home() / ".cache" / "imdm-lab")


def offline(*variables: str) -> bool:
    """True when any of the environment variables (e.g. HF_HUB_OFFLINE) is set to anything but an off value
    ("", 0, false, no, off; case and surrounding spaces ignored): no download may be tried."""
    return any(os.environ.get(name, "0").strip().lower() not in {"", "0", "false", "no", "off"} for name in variables)
