"""`python -m scale import-mdlm --from PATH_OR_HF_ID --out DIR`: official MDLM (or IMDM) weights -> a checkpoint.

Accepted sources (imdm-reference.md sec. 11):
- a Hugging Face model folder or id such as `kuleshov-group/mdlm-owt`: config.json (hidden_dim, cond_dim,
  n_blocks, n_heads, vocab_size, model_length, time_conditioning) and model.safetensors or
  pytorch_model.bin with keys `backbone.*`;
- a Lightning .ckpt of the MDLM / DUO / IMDM code: `state_dict` with keys `backbone.*` and, optionally,
  the EMA shadow parameters (`ema.shadow_params`, in parameter order, rotary `inv_freq` excluded).

After `backbone.` is stripped the names are scale.model.DiT's. The rotary `inv_freq` buffer is checked
(it fixes the head count) and dropped. An MDLM has no eps path: the IMDM built from it keeps the eps-MLP
at its zero-initialised last layer, so it computes exactly the MDLM's logits.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from imdm_lab.checks import check_writable
from scale.checkpoint import make_dit_config, save_checkpoint, weight_mismatches
from scale.config import Config, DataSection, ModelSection
from scale.model import SIZES, DiT, DiTConfig

EPS_PATH = ("vocab_embed.imdm_mlp.", "vocab_embed.learnable_noise_", "vocab_embed.mask_table")
# vocabulary size -> (tokenizer, mask id, dataset) of the official models
VOCABS = {50258: ("gpt2", 50257, "openwebtext"), 30522: ("bert-base-uncased", 103, "lm1b")}


def add_arguments(p) -> None:
    p.add_argument("--from", dest="source", required=True,
                   help="HF model folder or id (kuleshov-group/mdlm-owt) or a Lightning .ckpt")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--noise", default=None,
                   help="eps law of the imported model: none (MDLM), rand, randn, learnable "
                        "(default: rand, or what the source's eps path implies)")
    p.add_argument("--noise-dim", type=int, default=0, help="eps dimension D (default: the hidden size)")
    p.add_argument("--softcap", type=float, default=0.0, help="attention softcap the source used (LM1B: 50)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="for a .ckpt holding an EMA: which weights to import (default ema)")
    p.add_argument("--mask-id", type=int, default=None, help="mask id (default: 50257 for GPT-2, 103 for BERT)")
    p.add_argument("--tokenizer", default=None, help="tokenizer name (default from the vocabulary size)")


# ---- reading the source ---------------------------------------------------------------------------
class _Opaque:
    """Stands in for every non-tensor object of a .ckpt (configs, tokenizers, callbacks): their classes are
    never imported and none of their code runs, so reading stays as safe as a weights-only load."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _TensorsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = _get_allowed_globals()
        return allowed.get(f"{module}.{name}", _Opaque)


class _TensorsOnlyPickle:
    Unpickler = _TensorsOnlyUnpickler
    load = pickle.load


def read_lightning(path: Path) -> dict:
    """torch.load with weights_only=True; a checkpoint that also pickles Python objects (Lightning's
    hyper-parameters) is read with those objects replaced by inert placeholders."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TensorsOnlyPickle)
    except Exception as err:  # a damaged zip or pickle surfaces as several exception types
        raise ValueError(f"--from: {path} is not a readable checkpoint ({type(err).__name__}: {err})") from None


def _strip(state: dict, source) -> dict[str, torch.Tensor]:
    keys = [k for k in state if k.startswith("backbone.")]
    if not keys:
        raise ValueError(f"--from: {source} holds no 'backbone.*' weights (keys start with "
                         f"{sorted({k.split('.')[0] for k in state})[:5]})")
    return {k[len("backbone."):]: state[k] for k in keys}


def _lightning_weights(path: Path, weights: str) -> dict[str, torch.Tensor]:
    blob = read_lightning(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise ValueError(f"--from: {path} has no 'state_dict' (not a Lightning checkpoint)")
    tensors = _strip(blob["state_dict"], path)
    shadow = (blob.get("ema") or {}).get("shadow_params") if isinstance(blob.get("ema"), dict) else None
    if weights == "ema" and shadow:
        names = [k for k in tensors if k != "rotary_emb.inv_freq"]
        if len(names) != len(shadow) or any(tensors[n].shape != s.shape for n, s in zip(names, shadow)):
            raise ValueError(f"--from: the EMA of {path} ({len(shadow)} tensors) does not line up with its "
                             f"{len(names)} parameters; pass --weights raw")
        tensors = {**tensors, **dict(zip(names, shadow))}
    return tensors


def _hf_folder(source: str) -> Path:
    if Path(source).is_dir():
        return Path(source)
    if Path(source).suffix or source.count("/") != 1:
        raise ValueError(f"--from: {source!r} is neither a folder, a .ckpt file nor a Hugging Face id owner/name")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(source, allow_patterns=["config.json", "*.safetensors", "*.bin"]))
    except Exception as err:  # hub errors: offline, not found, network
        raise ValueError(f"--from: could not fetch {source!r} from the Hugging Face hub "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def _hf_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"--from: {folder} has no config.json")
    hf = json.loads(config_path.read_text())
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ValueError(f"--from: {folder} has no *.safetensors or *.bin weights")
    state: dict = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file
            state.update(load_file(str(f)))
        else:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return _strip(state, folder), hf


# ---- mapping onto our DiT -------------------------------------------------------------------------
def infer_size(tensors: dict[str, torch.Tensor], hf: dict | None) -> str:
    """The named size whose (hidden, blocks, heads, cond) the source has; heads from config.json or
    from the rotary table's length (head_dim / 2)."""
    hidden = tensors["vocab_embed.embedding"].shape[1]
    cond = tensors["sigma_map.mlp.0.weight"].shape[0]
    blocks = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
    heads = (hf or {}).get("n_heads")
    if heads is None and "rotary_emb.inv_freq" in tensors:
        heads = hidden // (2 * tensors["rotary_emb.inv_freq"].numel())
    for name, s in SIZES.items():
        if (s.hidden, s.blocks, s.cond) == (hidden, blocks, cond) and heads in (None, s.heads):
            return name
    raise ValueError(f"--from: no named size has hidden {hidden}, {blocks} blocks, {heads} heads, cond {cond}; "
                     f"sizes: {', '.join(f'{n} {s}' for n, s in SIZES.items())}")


def _check_rotary(tensors: dict, config: DiTConfig, source) -> None:
    inv = tensors.pop("rotary_emb.inv_freq", None)
    if inv is None:
        return
    hd = config.dims.hidden // config.dims.heads
    want = 1.0 / (10_000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    if inv.shape != want.shape or not torch.allclose(inv.float(), want):
        raise ValueError(f"--from: {source}: rotary_emb.inv_freq does not match base 10000 and head dim {hd}")


def convert(tensors: dict[str, torch.Tensor], config: DiTConfig, source) -> DiT:
    """Our DiT with the source's weights; parameters of the eps path absent from the source keep their
    initialisation (zero last layer). Any other missing key, unexpected key or shape is an error."""
    tensors = dict(tensors)
    _check_rotary(tensors, config, source)
    model = DiT(config)
    own = model.state_dict()
    problems = weight_mismatches(own, tensors, may_miss=EPS_PATH)
    if problems:
        raise ValueError(f"--from: {source} does not map onto the DiT ({problems})")
    model.load_state_dict({**own, **{k: v.float() for k, v in tensors.items()}})
    return model


def _noise_of(tensors: dict, requested: str | None, noise_dim: int) -> tuple[str, int]:
    if "vocab_embed.imdm_mlp.0.weight" in tensors:  # an IMDM source fixes D
        return requested or "rand", tensors["vocab_embed.imdm_mlp.0.weight"].shape[1]
    return requested or "rand", noise_dim


def run(args) -> int:
    check_writable("--out", args.out, folder=True)
    source = args.source
    if source.endswith(".ckpt") or Path(source).is_file():
        if not Path(source).is_file():
            raise ValueError(f"--from: no such file {source!r}")
        tensors, hf = _lightning_weights(Path(source), args.weights), None
    else:
        tensors, hf = _hf_weights(_hf_folder(source))
    for key in ("vocab_embed.embedding", "sigma_map.mlp.0.weight"):
        if key not in tensors:
            raise ValueError(f"--from: {source} lacks backbone.{key}; not an MDLM / IMDM DiT")
    vocab = tensors["output_layer.linear.weight"].shape[0] if "output_layer.linear.weight" in tensors \
        else tensors["vocab_embed.embedding"].shape[0]
    tok, mask_id, dataset = VOCABS.get(vocab, (None, vocab - 1, "openwebtext"))
    tokenizer = args.tokenizer or tok
    if tokenizer is None:
        raise ValueError(f"--tokenizer: needed for a vocabulary of {vocab} classes (known: {sorted(VOCABS)})")
    noise, noise_dim = _noise_of(tensors, args.noise, args.noise_dim)
    model_section = ModelSection(size=infer_size(tensors, hf), noise=noise, noise_dim=noise_dim,
                                 softcap=args.softcap, dropout=float((hf or {}).get("dropout", -1.0)),
                                 time_conditioning=bool((hf or {}).get("time_conditioning", False)))
    config = Config(model=model_section, data=DataSection(
        dataset=dataset, tokenizer=tokenizer, length=int((hf or {}).get("model_length", 1024))))
    mask_id = mask_id if args.mask_id is None else args.mask_id
    model = convert(tensors, make_dit_config(config, vocab, mask_id), source)
    save_checkpoint(args.out, model.state_dict(), None, None, {
        "step": 0, "config": config.to_dict(), "vocab_size": vocab, "mask_id": mask_id,
        "tokenizer": tokenizer, "imported_from": str(source)})
    print(f"wrote {args.out}: {model_section.size} DiT, noise {noise}, vocabulary {vocab}, mask id {mask_id}")
    return 0
