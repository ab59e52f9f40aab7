"""Where the project keeps what it builds or fetches once: token blocks, BPE tokenizers, Hub snapshots,
the text8 archive."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$IMDM_CACHE`, else ~/.cache/imdm-lab."""
    return Path(os.environ.get("IMDM_CACHE") or Path.home() / ".cache" / "imdm-lab")
