"""Checkpoints as Hugging Face Hub repositories.

`python -m scale push --ckpt DIR --repo user/name [--private]` uploads a checkpoint; every command that
reads one (`sample`, `evaluate --ckpt`, `distill --teacher / --init`, `coupling --teacher`) accepts a Hub
id `user/name` (or `user/name@revision`) as well as a folder, through `resolve_checkpoint`.

A checkpoint's Hub repository holds

    config.json         the checkpoint's state.json without what only resuming needs (RNG states,
                        data position): format, step, config, vocabulary, mask id, tokenizer
    model.safetensors   the raw weights
    ema.safetensors     the EMA weights (when the checkpoint has an EMA of its own)
    README.md           a short model card

and no pickles (the optimizer state stays local). A downloaded repository is written back as a
checkpoint folder (scale.checkpoints.checkpoint.write_checkpoint_files) under `$IMDM_CACHE/hub/<user>--<name>/<commit>`,
once per commit, and that folder is what the commands load.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from imdm_lab import durable
from scale.checkpoints.checkpoint import load_model, read_state, read_tensors, write_checkpoint_files
from scale.checkpoints.state import FORMAT, CheckpointState
from scale.data.cache import cache_root, offline

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
HUB_FILES = ["config.json", "model.safetensors", "ema.safetensors", "README.md"]
LOCAL_ONLY = ("rng", "data")  # state.json entries that only resuming a run needs


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


# ---- writing a Hub folder ------------------------------------------------------------------------
def model_card(state: CheckpointState, repo: str) -> str:
    """A short README.md: what the model is, its dimensions and how to sample from it."""
    cfg = state.config.model
    d = cfg.dims
    kind = "MDLM" if cfg.labels == "none" else f"IMDM ({cfg.labels} mask labels)"
    return (f"---\nlibrary_name: imdm-lab\ntags:\n- masked-diffusion\n- imdm-lab\n---\n\n# {repo}\n\n"
            f"A {kind} DiT denoiser written by imdm-lab: hidden {d.hidden}, {d.blocks} blocks, {d.heads} heads, "
            f"cond {d.cond}; vocabulary {cfg.vocab_size} (mask id {cfg.mask_id}, tokenizer "
            f"`{state.tokenizer}`); sequence length {state.config.data.length}; step {state.step}.\n\n"
            f"```bash\npython -m scale sample --ckpt {repo} --steps 1,2,4,8 --n 4\n```\n\n"
            "Files: `config.json` (the run's settings), `model.safetensors` (weights), `ema.safetensors` "
            "(EMA weights, when present).\n")


def export_hub_folder(ckpt: str | Path, dest: str | Path, repo: str = "user/name") -> Path:
    """Write the Hub layout of checkpoint `ckpt` into the folder `dest` (created; must be empty)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"dest: expected an empty folder, got {dest}")
    state = read_state(ckpt)
    raw = load_model(ckpt, "model")[0].state_dict()
    ema = load_model(ckpt, "ema")[0].state_dict()
    meta = {"step": str(state.step), "format": FORMAT}
    save_file({k: v.contiguous() for k, v in raw.items()}, dest / "model.safetensors", metadata=meta)
    if any(not torch.equal(ema[k], raw[k]) for k in raw):  # an EMA of its own (imports have none)
        save_file({k: v.contiguous() for k, v in ema.items()}, dest / "ema.safetensors", metadata=meta)
    config = {"format": FORMAT, **{k: v for k, v in state.to_dict().items() if k not in LOCAL_ONLY}}
    (dest / "config.json").write_text(json.dumps(config, indent=1))
    (dest / "README.md").write_text(model_card(state, repo))
    return dest


def checkpoint_from_hub_folder(folder: str | Path, dest: str | Path) -> Path:
    """The checkpoint folder `dest` rebuilt from a downloaded Hub folder (config.json + safetensors);
    written beside `dest` and renamed into place, so a half-written copy is never used."""
    folder, dest = Path(folder), Path(dest)
    path = folder / "config.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"ckpt: {path} is not a readable config.json ({_first_line(err)})") from None
    if not isinstance(entries, dict) or entries.get("format") != FORMAT:
        raise ValueError(f"ckpt: {folder} is not an {FORMAT} Hub repository (config.json format "
                         f"{entries.get('format') if isinstance(entries, dict) else None!r})")
    state = CheckpointState.from_dict(entries, path)
    raw = read_tensors(folder / "model.safetensors", state.step)
    ema = read_tensors(folder / "ema.safetensors", state.step) if (folder / "ema.safetensors").is_file() else raw
    try:
        with durable.folder(dest) as staged:
            write_checkpoint_files(staged, raw, ema, None, state.to_dict())
    except FileExistsError:  # another process (a torchrun rank) finished the same copy first
        read_state(dest)
    return dest


# ---- reading: a folder or a Hub id ---------------------------------------------------------------
def download(repo: str, revision: str | None, option: str = "ckpt") -> Path:
    """snapshot_download of a checkpoint repository, every failure one line naming `option`."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE=1 forbids downloading it" if offline("HF_HUB_OFFLINE")
               else "the Hugging Face Hub cannot be reached (no network?)")
        raise ValueError(f"{option}: {repo!r} is no local folder, and as a Hub id it is not in the local "
                         f"Hugging Face cache and {why}") from None
    except Exception as err:  # not found, gated, revision missing, HTTP errors
        raise ValueError(f"{option}: {repo!r} is no local folder and could not be fetched from the Hugging Face "
                         f"Hub ({_first_line(err)})") from None


def resolve_checkpoint(ref: str | Path, option: str = "ckpt") -> Path:
    """A local checkpoint folder for `ref`: an existing path as it is, else a Hub id user/name[@revision]
    downloaded and rebuilt once per commit. Anything else is returned as a path, for the loaders' own
    'no such directory' error."""
    path = Path(ref).expanduser()
    if path.exists() or not HUB_ID.match(str(ref)):
        return path
    repo, _, revision = str(ref).partition("@")
    snapshot = download(repo, revision or None, option)
    dest = cache_root() / "hub" / repo.replace("/", "--") / snapshot.name  # snapshot folders are commits
    if dest.exists():  # complete when it exists: it is committed whole
        try:
            read_state(dest)
            return dest
        except ValueError:  # a copy of ours damaged since: made again
            durable.remove(dest)
    return checkpoint_from_hub_folder(snapshot, dest)


# ---- uploading: `python -m scale push` ---------------------------------------------------------
def push(ckpt: str | Path, repo: str, private: bool = False, message: str | None = None) -> str:
    """Upload checkpoint `ckpt` to the Hub repository `repo`; returns the repository id."""
    import huggingface_hub

    if not HUB_ID.match(repo) or "@" in repo:
        raise ValueError(f"--repo: expected a Hub repository id user/name, got {repo!r}")
    if offline("HF_HUB_OFFLINE"):
        raise ValueError("--repo: HF_HUB_OFFLINE=1 forbids uploading; unset it to push")
    state = read_state(ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        export_hub_folder(ckpt, tmp, repo)
        try:
            huggingface_hub.create_repo(repo, private=private, exist_ok=True)
            huggingface_hub.upload_folder(repo_id=repo, folder_path=tmp,
                                          commit_message=message or f"imdm-lab checkpoint, step {state.step}")
        except Exception as err:  # authentication, permissions, network
            raise ValueError(f"--repo: could not upload to {repo!r} ({_first_line(err)})") from None
    return repo

