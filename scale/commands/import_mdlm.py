"""`python -m scale import-mdlm --from PATH_OR_HF_ID --out DIR`: MDLM, IMDM or SDTT weights -> a checkpoint
(scale.checkpoints.mdlm_import.import_checkpoint: the accepted sources and how their dimensions are read)."""
from __future__ import annotations

from scale.checkpoints.mdlm_import import import_checkpoint


def add_arguments(p) -> None:
    p.add_argument("--from", dest="source", required=True,
                   help="HF model folder or id (kuleshov-group/mdlm-owt) or a Lightning .ckpt")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--labels", default=None,
                   help="label law of the imported model: none (MDLM), rand, randn, learnable, finite "
                        "(default: rand, or what the source's eps path implies)")
    p.add_argument("--label-dim", type=int, default=None, help="label dimension D (default: the hidden size)")
    p.add_argument("--softcap", type=float, default=None,
                   help="attention softcap the source used (default: its config's, else off; LM1B: 50)")
    p.add_argument("--heads", type=int, default=None,
                   help="attention heads, for a source that records them neither in a config nor a rotary table")
    p.add_argument("--revision", default=None, help="branch / tag / commit of a Hugging Face id")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="for a .ckpt holding an EMA: which weights to import (default ema)")
    p.add_argument("--mask-id", type=int, default=None, help="mask id (default: 50257 for GPT-2, 103 for BERT)")
    p.add_argument("--tokenizer", default=None, help="tokenizer name (default from the vocabulary size)")


def run(args) -> int:
    print(import_checkpoint(args.source, args.out, labels=args.labels, label_dim=args.label_dim,
                            softcap=args.softcap, heads=args.heads, revision=args.revision, weights=args.weights,
                            mask_id=args.mask_id, tokenizer=args.tokenizer))
    return 0
