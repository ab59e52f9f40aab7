"""MDLM, IMDM or SDTT weights -> a checkpoint (`import_checkpoint`, behind `python -m scale import-mdlm`).

Accepted sources (the layouts of Hugging Face kuleshov-group/mdlm-owt and of the Lightning .ckpt files
of kuleshov-group/mdlm and Ugness/IMDM, whose DiT is models/dit.py in both):
- a Hugging Face model folder or id such as `kuleshov-group/mdlm-owt` (`--revision` picks a branch, as
  SDTT's students on `jdeschena/sdtt`): config.json and model.safetensors or pytorch_model.bin with keys
  `backbone.*` (SDTT students distilled from the Hub MDLM: `backbone.backbone.*`);
- a Lightning .ckpt of the MDLM / DUO / IMDM / SDTT code: `state_dict` with keys `backbone.*` and,
  optionally, the EMA shadow parameters (`ema.shadow_params`: the trainable parameters in order, so
  without the rotary `inv_freq` buffer and a frozen one-state mask table).

The DiT is built with the source's own dimensions, none looked up: hidden size and vocabulary from the
embedding, cond width from the timestep embedder, blocks by counting, heads from the config (MDLM's flat
`n_heads`, or the Hydra `model.n_heads` of SDTT / IMDM configs) or else from the rotary table (head
dim = 2 len(inv_freq)), qk-norm from the presence of q_norm / k_norm, label dim D from the eps-MLP's
input, K from the finite table. The softcap comes from the config (`model.softcap`, < 0 = off) or
--softcap. After the prefix is stripped the names are scale.model.dit.DiT's, except the official finite
table `vocab_embed.imdm_mlp.weight` (here `vocab_embed.mask_table`) and the learnable labels' (1, 1, D)
vectors (here D). An MDLM has no eps path: the IMDM built from it keeps the eps-MLP at its
zero-initialised last layer, so it computes exactly the MDLM's logits.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from imdm_lab.checks import check_writable
from scale.checkpoints.checkpoint import save_checkpoint, weight_mismatches
from scale.checkpoints.config import Config, DataSection
from scale.checkpoints.torch_files import load_skipping_objects, load_weights_only
from scale.model.dit import EPS_PATH, SIZES, DiT, DiTConfig, DiTSize

# vocabulary size -> (tokenizer, mask id, dataset) of the official models
VOCABS = {50258: ("gpt2", 50257, "openwebtext"), 30522: ("bert-base-uncased", 103, "lm1b")}
# setting -> where a source config records it: MDLM's flat config.json key, then Hydra paths (SDTT's
# config.json, the hyper-parameters of a Lightning .ckpt)
CONFIG_FIELDS = {
    "heads": ("n_heads", "model.n_heads"),
    "dropout": ("dropout", "model.dropout"),
    "length": ("model_length", "model.length"),
    "time_conditioning": ("time_conditioning", "algo.time_conditioning"),
    "softcap": ("softcap", "model.softcap"),
    "noise_type": ("noise_type", "algo.noise_type"),
    "noise_scale": ("noise_scale", "algo.noise_scale"),
    "tokenizer": ("tokenizer_name", "tokenizer.name"),
}
OFFICIAL_TABLE = "vocab_embed.imdm_mlp.weight"  # the official K x d finite mask table


# ---- reading the source ---------------------------------------------------------------------------
def read_lightning(path: Path) -> dict:
    """A Lightning .ckpt through torch's weights-only unpickler; the Python objects it also pickles
    (hyper-parameters, a tokenizer) become inert placeholders (scale.checkpoints.torch_files)."""
    blob = load_skipping_objects(path, "--from")
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise ValueError(f"--from: {path} has no 'state_dict' (not a Lightning checkpoint)")
    return blob


def _strip(state: dict, source) -> dict[str, torch.Tensor]:
    """The backbone's weights without their prefixes: `backbone.` (nested twice in an SDTT student of
    the Hub MDLM) and torch.compile's `_orig_mod.`."""
    keys = [k for k in state if k.replace("_orig_mod.", "").startswith("backbone.")]
    if not keys:
        raise ValueError(f"--from: {source} holds no 'backbone.*' weights (keys start with "
                         f"{sorted({k.split('.')[0] for k in state})[:5]})")
    bad = [k for k in keys if not isinstance(state[k], torch.Tensor)]
    if bad:
        raise ValueError(f"--from: {source} holds non-tensor values under {', '.join(bad[:3])}")
    out = {}
    for k in keys:
        name = k.replace("_orig_mod.", "")
        while name.startswith("backbone."):
            name = name[len("backbone."):]
        out[name] = state[k]
    return out


def _lightning_weights(blob, path: Path, weights: str) -> dict[str, torch.Tensor]:
    """The backbone weights of a .ckpt read by read_lightning: raw, or its EMA shadow parameters."""
    tensors = _strip(blob["state_dict"], path)
    shadow = (blob.get("ema") or {}).get("shadow_params") if isinstance(blob.get("ema"), dict) else None
    if weights == "ema" and shadow:
        if not isinstance(shadow, list) or not all(isinstance(s, torch.Tensor) for s in shadow):
            raise ValueError(f"--from: the EMA of {path} is not a list of tensors; pass --weights model")
        frozen = {"rotary_emb.inv_freq"} | ({OFFICIAL_TABLE} if _is_frozen_table(tensors) else set())
        names = [k for k in tensors if k not in frozen]
        if len(names) != len(shadow) or any(tensors[n].shape != s.shape for n, s in zip(names, shadow, strict=False)):
            raise ValueError(f"--from: the EMA of {path} ({len(shadow)} tensors) does not line up with its "
                             f"{len(names)} parameters; pass --weights model")
        tensors = {**tensors, **dict(zip(names, shadow, strict=False))}
    return tensors


def _is_frozen_table(tensors: dict) -> bool:
    """A one-state finite mask table is frozen (requires_grad False), so no EMA tracks it."""
    return OFFICIAL_TABLE in tensors and tensors[OFFICIAL_TABLE].dim() == 2 and tensors[OFFICIAL_TABLE].shape[0] == 1


def _lightning_config(blob: dict) -> dict | None:
    """The Hydra config among a .ckpt's hyper-parameters when it is plain data (dicts, numbers,
    strings); pickled config objects are never reconstructed, and then the shapes alone decide."""
    hp = blob.get("hyper_parameters")
    config = hp.get("config") if isinstance(hp, dict) else None
    return config if isinstance(config, dict) else None


def _hf_folder(source: str, revision: str | None = None) -> Path:
    if Path(source).is_dir():
        return Path(source)
    if Path(source).suffix or source.count("/") != 1:
        raise ValueError(f"--from: {source!r} is neither a folder, a .ckpt file nor a Hugging Face id owner/name")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(source, revision=revision,
                                      allow_patterns=["config.json", "*.safetensors", "*.bin"]))
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
            blob = load_weights_only(f, "--from")
            if not isinstance(blob, dict):
                raise ValueError(f"--from: {f} holds a {type(blob).__name__}, expected a state dict")
            state.update(blob)
    return _strip(state, folder), hf


# ---- mapping onto our DiT -------------------------------------------------------------------------
def recorded(hf: dict | None, name: str, default=None):
    """A setting of the source's config (CONFIG_FIELDS: a flat key or a dotted Hydra path), else default."""
    for path in CONFIG_FIELDS[name]:
        node = hf or {}
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not (isinstance(node, str) and node.startswith("${")):  # unresolved Hydra
            return node
    return default


def infer_dims(tensors: dict[str, torch.Tensor], hf: dict | None, heads: int | None = None) -> DiTSize:
    """(hidden, blocks, heads, cond) of the source: shapes, and heads from `heads`, the config or the
    rotary table (inv_freq holds head_dim / 2 frequencies); dropout from the config (else None: unknown)."""
    hidden = tensors["vocab_embed.embedding"].shape[1]
    cond = tensors["sigma_map.mlp.0.weight"].shape[0]
    blocks = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
    heads = heads or recorded(hf, "heads")
    if heads is None and "rotary_emb.inv_freq" in tensors:
        heads = hidden // (2 * tensors["rotary_emb.inv_freq"].numel())
    if heads is None:
        raise ValueError("--from: the source records its number of attention heads nowhere (no config.json "
                         "n_heads / model.n_heads, no rotary_emb.inv_freq); pass --heads")
    if blocks == 0:
        raise ValueError("--from: the source has no blocks.N.* weights")
    dropout = recorded(hf, "dropout")
    return DiTSize(hidden=hidden, blocks=blocks, heads=int(heads), cond=cond,
                   dropout=None if dropout is None else float(dropout))


def source_labels(tensors: dict, hf: dict | None, requested: str | None, label_dim: int | None) -> dict:
    """The eps path the source has, as DiTConfig fields (labels, label_dim, num_mask, label_scale):
    the finite table fixes K, the eps-MLP's input D, learnable parameters the kind; a requested kind
    must agree with what the source holds. An MDLM source takes any kind (default rand)."""
    scale = float(recorded(hf, "noise_scale", 1.0))
    if OFFICIAL_TABLE in tensors and tensors[OFFICIAL_TABLE].dim() == 2:
        found, allowed = {"labels": "finite", "num_mask": tensors[OFFICIAL_TABLE].shape[0]}, ("finite",)
    elif "vocab_embed.imdm_mlp.0.weight" in tensors:
        dim = tensors["vocab_embed.imdm_mlp.0.weight"].shape[1]
        if "vocab_embed.learnable_noise_mu" in tensors:
            kind, allowed = "learnable", ("learnable",)
        else:
            kind = recorded(hf, "noise_type")
            kind, allowed = (kind if kind in ("rand", "randn") else "rand"), ("rand", "randn", "learnable")
        found = {"labels": kind, "label_dim": dim, "label_scale": scale}
    else:
        return {"labels": requested or "rand", "label_dim": label_dim}
    if requested is not None and requested not in allowed:
        states = f" (K = {found['num_mask']})" if "num_mask" in found else ""
        raise ValueError(f"--labels: the source's eps path is {found['labels']!r}{states}; "
                         f"expected one of {list(allowed)}, got {requested!r}")
    return {**found, "labels": requested or found["labels"]}


def to_own_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official eps-path names and shapes -> scale.model.dit.DiT's (finite table, learnable label vectors)."""
    out = dict(tensors)
    if OFFICIAL_TABLE in out and out[OFFICIAL_TABLE].dim() == 2:
        out["vocab_embed.mask_table"] = out.pop(OFFICIAL_TABLE)
    for name in ("vocab_embed.learnable_noise_mu", "vocab_embed.learnable_noise_sigma"):
        if name in out:
            out[name] = out[name].reshape(-1)
    return out


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
    tensors = to_own_names(tensors)
    _check_rotary(tensors, config, source)
    model = DiT(config)
    own = model.state_dict()
    problems = weight_mismatches(own, tensors, may_miss=EPS_PATH)
    if problems:
        raise ValueError(f"--from: {source} does not map onto the DiT ({problems})")
    model.load_state_dict({**own, **{k: v.float() for k, v in tensors.items()}})
    return model


def _preset_of(dims: DiTSize) -> str:
    """The named size with exactly these dimensions (a label in state.json), else the default one;
    the dimensions themselves are always written explicitly."""
    same = [n for n, s in SIZES.items() if (s.hidden, s.blocks, s.heads, s.cond) ==
            (dims.hidden, dims.blocks, dims.heads, dims.cond)]
    return same[0] if same else DiTConfig.size


def read_source(source: str, weights: str = "ema",
                revision: str | None = None) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(backbone weights without prefixes, the source's config or None)."""
    if source.endswith(".ckpt") or Path(source).is_file():
        if not Path(source).is_file():
            raise ValueError(f"--from: no such file {source!r}")
        blob = read_lightning(Path(source))
        return _lightning_weights(blob, Path(source), weights), _lightning_config(blob)
    return _hf_weights(_hf_folder(source, revision))


def import_checkpoint(source: str, out: str | Path, *, labels: str | None = None, label_dim: int | None = None,
                      softcap: float | None = None, heads: int | None = None, revision: str | None = None,
                      weights: str = "ema", mask_id: int | None = None, tokenizer: str | None = None) -> str:
    """Write the checkpoint folder `out` (new or empty) from the MDLM / IMDM / SDTT weights `source`;
    returns a one-line description of the DiT it holds. labels: the label law (None: rand, or what the
    source's eps path implies); label_dim: D (None: the hidden size); softcap, heads, mask_id, tokenizer:
    None takes the source's config, else the defaults of its vocabulary; weights: ema | model (the raw
    weights) of a .ckpt."""
    if softcap is not None and not (math.isfinite(softcap) and softcap >= 0):
        raise ValueError(f"--softcap: expected a finite number >= 0 (0 = off), got {softcap!r}")
    for name, value in (("--label-dim", label_dim), ("--heads", heads), ("--mask-id", mask_id)):
        if value is not None and value < (0 if name == "--mask-id" else 1):
            raise ValueError(f"{name}: expected an integer >= {0 if name == '--mask-id' else 1}, got {value!r}")
    folder = check_writable("--out", out, folder=True)
    if folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"--out: {str(folder)!r} is not empty; expected a new checkpoint folder")
    tensors, hf = read_source(source, weights, revision)
    for key in ("vocab_embed.embedding", "sigma_map.mlp.0.weight"):
        if key not in tensors:
            raise ValueError(f"--from: {source} lacks backbone.{key}; not an MDLM / IMDM DiT")
    vocab = tensors["output_layer.linear.weight"].shape[0] if "output_layer.linear.weight" in tensors \
        else tensors["vocab_embed.embedding"].shape[0]
    tok, default_mask_id, dataset = VOCABS.get(vocab, (None, vocab - 1, "openwebtext"))
    tokenizer = tokenizer or recorded(hf, "tokenizer") or tok
    if tokenizer is None:
        raise ValueError(f"--tokenizer: needed for a vocabulary of {vocab} classes (known: {sorted(VOCABS)})")
    dims = infer_dims(tensors, hf, heads)
    softcap = softcap if softcap is not None else max(0.0, float(recorded(hf, "softcap", 0.0)))
    qk_norm = "blocks.0.q_norm.weight" in tensors
    mask_id = default_mask_id if mask_id is None else mask_id
    model_config = DiTConfig(size=_preset_of(dims), hidden=dims.hidden, blocks=dims.blocks, heads=dims.heads,
                             cond=dims.cond, softcap=softcap, qk_norm=qk_norm, dropout=dims.dropout,
                             time_conditioning=bool(recorded(hf, "time_conditioning", False)),
                             **source_labels(tensors, hf, labels, label_dim)).with_vocabulary(vocab, mask_id)
    config = Config(model=model_config, data=DataSection(
        dataset=dataset, tokenizer=tokenizer, length=int(recorded(hf, "length", 1024))))
    model = convert(tensors, model_config, source)
    save_checkpoint(out, model.state_dict(), None, None, {
        "step": 0, "config": config.to_dict(), "tokenizer": tokenizer, "imported_from": str(source)})
    m, law = model_config, model.process.labels
    return (f"wrote {out}: DiT hidden {m.hidden}, {m.blocks} blocks, {m.heads} heads, cond {m.cond}"
            f"{', qk-norm' if qk_norm else ''}{f', softcap {softcap:g}' if softcap else ''}; labels {m.labels}"
            f"{f' (D = {law.dim})' if law is not None and law.continuous else ''}"
            f"{f' (K = {m.num_mask})' if m.labels == 'finite' else ''}; vocabulary {vocab}, mask id {mask_id}")
