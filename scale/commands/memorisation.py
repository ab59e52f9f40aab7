"""`python -m scale memorisation --samples FILE --data CORPUS --tokenizer TOK [--length L] [--coupling NAME=DIR ...]
[--threshold 32] [--near 0.1] [--reference 256] --out FILE.json`: how much of each stored sample is training
text, and how close it is to a coupling's stored completions (scale.evaluation.memorisation)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from imdm_lab import durable
from imdm_lab.checks import check_int, check_writable
from scale.data.blocks import load_blocks
from scale.evaluation.memorisation import MemorisationSettings, block_chunks, check_couplings, memorisation
from scale.evaluation.samples_file import read_samples
from scale.training.coupling import Coupling


def add_arguments(p) -> None:
    p.add_argument("--samples", required=True, help="samples file of `python -m scale evaluate --samples`")
    p.add_argument("--data", required=True, help="the corpus the checkpoints were trained on (e.g. wiki, lm1b)")
    p.add_argument("--tokenizer", required=True, help="the checkpoints' tokenizer (name or folder)")
    p.add_argument("--length", type=int, default=None,
                   help="block length of the training data (default: the samples' length)")
    p.add_argument("--coupling", action="extend", nargs="+", default=[], metavar="NAME=DIR",
                   help="coupling folder of the checkpoint labelled NAME (`python -m scale coupling`)")
    p.add_argument("--threshold", type=int, default=32, help="run length counted as a reproduction (default 32)")
    p.add_argument("--near", type=float, default=0.1, help="Hamming distance counted as a near copy (default 0.1)")
    p.add_argument("--reference", type=int, default=256, help="validation blocks scored as the reference")
    p.add_argument("--out", required=True, help="JSON file to write")


def _couplings(pairs: list[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--coupling: expected NAME=DIR (a checkpoint label and a coupling folder), got {pair!r}")
        if name in out:
            raise ValueError(f"--coupling: expected one folder per label, got {name!r} twice")
        out[name] = Path(folder)
    return out


def check(args) -> tuple[MemorisationSettings, Path, dict[str, Path]]:
    """(settings, JSON path, {label: coupling folder}): values, the --coupling pairs and the output, before
    any file is read."""
    settings = MemorisationSettings(threshold=args.threshold, near=args.near, reference=args.reference)
    if args.length is not None:
        check_int("--length", args.length, 3)
    couplings = _couplings(args.coupling)
    return settings, check_writable("--out", args.out), couplings


def run(args) -> int:
    settings, out, folders = check(args)
    cells = read_samples(args.samples)
    couplings = {}
    for name, folder in folders.items():
        try:
            couplings[name] = (folder, Coupling(folder).x_0)
        except ValueError as err:
            raise ValueError(f"--coupling: {name}={folder}: {err}") from None
    check_couplings(cells, couplings)  # before the blocks are opened (or built)
    lengths = sorted({c.ids.shape[1] for c in cells})
    if args.length is None and len(lengths) > 1:
        raise ValueError(f"--length: expected the training block length, the samples have several ({lengths})")
    length = args.length or lengths[0]
    train = load_blocks(args.data, "train", tokenizer=args.tokenizer, length=length)
    top = max(int(c.ids.max()) for c in cells)
    if top >= train.num_classes:
        raise ValueError(f"--tokenizer: expected the samples' vocabulary, got {args.tokenizer!r} of "
                         f"{train.num_classes} ids while the samples hold id {top}")
    val = load_blocks(args.data, "validation", tokenizer=args.tokenizer, length=length)
    reference = np.asarray(val.blocks[:settings.reference], dtype=np.int64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = memorisation(cells, block_chunks(train.blocks), train.length, reference, couplings, settings, device)
    result = {"samples": str(args.samples), "data": args.data, "tokenizer": args.tokenizer,
              "train_blocks": len(train), "train_length": train.length, **result}
    ref = result["reference"]
    print(f"{'validation blocks':>30}: longest run mean {ref['mean_longest']:6.2f}  max {ref['max_longest']:4d}")
    for e in result["cells"]:
        runs, near = e["train"], e["coupling"]
        print(f"{e['label']:>18} steps {e['steps']:>5}: longest run mean {runs['mean_longest']:6.2f}  "
              f"max {runs['max_longest']:4d}  >= {settings.threshold}: {runs['frac_at_least_threshold']:.3f}"
              + (f"  coupling distance mean {near['mean_distance']:.3f}  exact {near['frac_exact']:.3f}"
                 if near else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    durable.write_text(out, json.dumps(result, indent=1, allow_nan=False))
    print(f"wrote {out}")
    return 0
