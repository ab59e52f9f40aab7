"""`python -m scale push --ckpt DIR --repo user/name [--private]`: upload a checkpoint to the Hugging Face
Hub (scale.checkpoints.hub.push: config.json, safetensors, a model card; no pickles)."""
from __future__ import annotations

from scale.checkpoints.hub import push


def add_arguments(p) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint folder to upload")
    p.add_argument("--repo", required=True, help="Hub repository id user/name (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--message", default=None, help="commit message (default: 'imdm-lab checkpoint, step N')")


def run(args) -> int:
    repo = push(args.ckpt, args.repo, args.private, args.message)
    print(f"pushed {args.ckpt} to https://huggingface.co/{repo}")
    return 0
