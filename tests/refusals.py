"""Helpers shared by the bad-input tests: a refusal is exit status 2 with one stderr line, and a coupling
folder written by hand in the layout of `python -m scale coupling`."""
import json
from pathlib import Path

import numpy as np


def one_line(capsys, main, argv, names) -> str:
    """main(argv) exits 2 with exactly one stderr line naming one of `names`; returns the line."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert any(n in lines[0] for n in names), lines[0]
    assert "Traceback" not in lines[0]
    return lines[0]


def write_coupling(folder: Path, meta: dict, tokens: tuple[int, int], token_dtype) -> Path:
    """A coupling folder of meta["n"] samples in shards of meta["shard_size"]: x_0 drawn uniformly from
    [tokens[0], tokens[1]), x_t keeping x_0 where not masked (mask id meta["mask_id"]), stored as
    token_dtype; meta.json is `meta` as given."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps(meta))
    n, shard_size = meta["n"], meta["shard_size"]
    for s in range(-(-n // shard_size)):
        index = np.arange(s * shard_size, min((s + 1) * shard_size, n))
        x_0 = rng.integers(*tokens, (len(index), meta["length"]))
        x_t = np.where(rng.random(x_0.shape) < 0.5, meta["mask_id"], x_0)
        shard = folder / f"shard-{s:06d}"
        shard.mkdir()
        for key, value in {"x_t": x_t.astype(token_dtype), "x_0": x_0.astype(token_dtype),
                           "t": rng.uniform(1e-3, 1, len(index)), "seed": index * 7 + 1, "index": index}.items():
            np.save(shard / f"{key}.npy", value)
    return folder
