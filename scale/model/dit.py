"""The DiT denoiser of MDLM / IMDM: adaLN-zero transformer blocks over the IMDM mask embedding.

Parameter names follow the official MDLM / IMDM backbone, so their state dicts load 1:1 once the
`backbone.` prefix is stripped (see scale/checkpoints/mdlm_import.py):

    vocab_embed.embedding, vocab_embed.imdm_mlp.{0,2}        token / mask embedding (imdm_lab.embedding)
    sigma_map.mlp.{0,2}                                      timestep embedder
    blocks.N.{norm1, attn_qkv, attn_out, norm2, mlp.0, mlp.2, adaLN_modulation[, q_norm, k_norm]}
    output_layer.{norm_final, linear, adaLN_modulation}

The model is a Denoiser: `model(x_t, eps, t) -> logits Float[B, L, C]`; SUBS and carry-over are left
to the kernels (imdm_lab.losses.subs_log_probs). `model(x_t, eps, t, targets=...)` returns the SUBS NLL
Float[B, L] at the positions with a target instead (imdm_lab.head_nll: no [B, L, C] logits), and
`model.hidden(x_t, eps, t)` gives the output head's input and the head itself.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from imdm_lab.embedding import MaskEmbedding
from imdm_lab.head_nll import head_nll
from imdm_lab.labels import LABEL_NAMES, MaskLabels, mask_labels
from imdm_lab.process import Process
from imdm_lab.schedules import SCHEDULES, get_schedule


@dataclass(frozen=True)
class DiTSize:
    hidden: int
    blocks: int
    heads: int
    cond: int
    dropout: float


# Named sizes; small / large / synthetic are the official model configs (Ugness/IMDM configs/model/*.yaml).
SIZES: dict[str, DiTSize] = {
    "tiny-cpu": DiTSize(hidden=32, blocks=2, heads=2, cond=32, dropout=0.0),
    "synthetic": DiTSize(hidden=128, blocks=4, heads=4, cond=128, dropout=0.0),
    "small": DiTSize(hidden=768, blocks=12, heads=12, cond=128, dropout=0.1),
    "large": DiTSize(hidden=1536, blocks=24, heads=16, cond=128, dropout=0.1),
}


# model.init -> whether the weights of the attention, the MLPs and the timestep MLP are drawn from N(0, 0.02)
# (DiT's initialize_weights, facebookresearch/DiT models.py) or kept at PyTorch's default Linear init (the
# reference MDLM code, kuleshov-group/mdlm models/dit.py, DDiTBlock and TimestepEmbedder). The adaLN
# modulations and the output layer start at zero either way.
INITS: dict[str, bool] = {"normal": True, "torch": False}


@dataclass(frozen=True)
class DiTConfig:
    """The [model] section of a run config: everything that fixes the DiT's parameter shapes, its forward
    pass and its diffusion process. `DiT(config)` builds it as it is. The dimensions hidden / blocks /
    heads / cond and dropout default (None) to the named size's; vocab_size and mask_id are the
    tokenizer's, filled in when the data is opened (`with_vocabulary`)."""

    size: str = "tiny-cpu"  # a name of SIZES: the preset of the dimensions left at None
    hidden: int | None = None  # hidden size d
    blocks: int | None = None  # transformer blocks
    heads: int | None = None  # attention heads (d / heads must be even: rotary)
    cond: int | None = None  # width of the timestep conditioning
    dropout: float | None = None
    labels: str = "rand"  # the label law (imdm_lab.labels.LABEL_NAMES): none (MDLM), rand, randn, learnable, finite
    label_dim: int | None = None  # D of continuous labels (None: the hidden size)
    label_scale: float = 1.0
    num_mask: int = 0  # K for labels = "finite"
    softcap: float = 0.0  # attention-logit softcap; 0 turns it off
    qk_norm: bool = False
    # Beyond the paper: slope s of a fixed local attention bias -s 2^-h |i - j| on head h's scores (0 = off;
    # every official checkpoint has none). It lets a small model read its neighbours from the first steps.
    local_bias: float = 0.0
    init: str = "normal"  # a name of INITS: how the block, timestep-MLP weights start
    time_conditioning: bool = False
    schedule: str = "loglinear"  # the masking schedule alpha_t; also MDLM's sigma = -log alpha_t of the embedder
    bf16: bool = True  # bf16 autocast of blocks and output layer on CUDA (never on CPU)
    vocab_size: int | None = None  # C output classes (the mask id may be one of them)
    mask_id: int | None = None

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"model.size: expected one of {sorted(SIZES)}, got {self.size!r}")
        for name in ("hidden", "blocks", "heads", "cond", "label_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"model.{name}: expected an integer >= 1 (unset: the size's), got {value!r}")
        d = self.dims
        if d.hidden % d.heads:
            raise ValueError(f"model.heads: expected a divisor of the hidden size {d.hidden}, got {d.heads}")
        if (d.hidden // d.heads) % 2:
            raise ValueError(f"model.heads: the head dimension hidden / heads = {d.hidden // d.heads} must be "
                             f"even for the rotary embedding, got heads {d.heads}")
        if not 0.0 <= d.dropout < 1.0:
            raise ValueError(f"model.dropout: expected a number in [0, 1), got {d.dropout!r}")
        if self.vocab_size is not None and self.vocab_size < 2:
            raise ValueError(f"model.vocab_size: expected an integer >= 2, got {self.vocab_size!r}")
        if self.mask_id is not None and (self.mask_id < 0 or self.mask_id > (self.vocab_size or self.mask_id)):
            raise ValueError(f"model.mask_id: expected an integer in [0, {self.vocab_size}], got {self.mask_id!r}")
        if not (math.isfinite(self.softcap) and self.softcap >= 0):
            raise ValueError(f"model.softcap: expected a finite number >= 0 (0 = off), got {self.softcap!r}")
        if not (math.isfinite(self.local_bias) and self.local_bias >= 0):
            raise ValueError(f"model.local_bias: expected a finite number >= 0 (0 = off), got {self.local_bias!r}")
        if self.init not in INITS:
            raise ValueError(f"model.init: expected one of {sorted(INITS)}, got {self.init!r}")
        if not (math.isfinite(self.label_scale) and self.label_scale > 0):
            raise ValueError(f"model.label_scale: expected a finite number > 0, got {self.label_scale!r}")
        if self.labels == "finite" and self.num_mask < 1:
            raise ValueError(f"model.num_mask: expected an integer >= 1 for labels 'finite', got {self.num_mask!r}")
        if self.labels not in LABEL_NAMES:
            raise ValueError(f"model.labels: expected one of {', '.join(LABEL_NAMES)}, got {self.labels!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"model.schedule: expected one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        self.mask_labels()  # validates label_dim / label_scale / num_mask

    def with_vocabulary(self, vocab_size: int, mask_id: int) -> DiTConfig:
        """This config for the data's C classes and mask id; a value the config already names must agree."""
        for key, have, data in (("vocab_size", self.vocab_size, vocab_size), ("mask_id", self.mask_id, mask_id)):
            if have is not None and have != data:
                raise ValueError(f"model.{key}: expected the data's {data}, got {have!r}")
        return dataclasses.replace(self, vocab_size=vocab_size, mask_id=mask_id)

    def mask_labels(self) -> MaskLabels | None:
        """The law of the mask labels eps this model reads; None for an MDLM (no eps path)."""
        return mask_labels(self.labels, dim=self.label_dim or self.dims.hidden, scale=self.label_scale,
                           K=self.num_mask)

    def process(self) -> Process:
        """The diffusion process of this model: mask id, schedule, label law, time conditioning."""
        return Process(mask_id=self.mask_id, schedule=self.schedule, labels=self.mask_labels(),
                       time_conditioning=self.time_conditioning)

    @property
    def dims(self) -> DiTSize:
        """The preset of `size` with every explicitly given dimension (and dropout) in its place."""
        preset = SIZES[self.size]
        given = {k: getattr(self, k) for k in ("hidden", "blocks", "heads", "cond", "dropout")}
        return dataclasses.replace(preset, **{k: v for k, v in given.items() if v is not None})

    @property
    def embed_rows(self) -> int:
        """Rows of the embedding table: C, plus one when the mask id lies outside the classes."""
        return max(self.vocab_size, self.mask_id + 1)


class LayerNorm(nn.Module):
    """Bias-free LayerNorm computed in float32 (also under autocast), then scaled by `weight`."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.layer_norm(x.float(), (x.shape[-1],))
        return x * self.weight


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation  x * (1 + scale) + shift.   x: [B, L, d]; shift, scale: [B, 1, d]."""
    return x * (1 + scale) + shift


def rotary_cos_sin(length: int, head_dim: int, device, base: float = 10_000.0):
    """Rotary tables cos, sin: Float32[L, head_dim] with frequencies theta_j = base^(-2j/head_dim),
    each repeated for the two halves (the rotate-half / GPT-NeoX layout of MDLM's flash-attn rotary)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


@functools.lru_cache(maxsize=32)
def rotary_tables(length: int, head_dim: int, device: torch.device, dtype: torch.dtype):
    """rotary_cos_sin in `dtype`, built once per (length, head_dim, device, dtype) and then reused."""
    cos, sin = rotary_cos_sin(length, head_dim, device)
    return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x' = x * cos + rotate_half(x) * sin, rotate_half(x1, x2) = (-x2, x1).   x: [B, L, H, hd]."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos[:, None, :].to(x.dtype) + rotated * sin[:, None, :].to(x.dtype)


@functools.lru_cache(maxsize=32)
def local_attention_bias(length: int, heads: int, slope: float, device: torch.device,
                         dtype: torch.dtype) -> torch.Tensor:
    """b[0, h, i, j] = -slope 2^-h |i - j|: Float[1, H, L, L], added to head h's attention scores.

    A symmetric (non-causal) ALiBi with geometric slopes slope, slope/2, ...: every head prefers near
    positions, the last ones only weakly, and rotary q, k still carry the relative position. (Four
    dimensions: given [H, L, L], CPU SDPA takes a path 2x slower, measured with torch 2.13.)"""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    slopes = slope * 2.0 ** -torch.arange(heads, device=device, dtype=torch.float32)
    return (-slopes[:, None, None] * (pos[None, :, None] - pos[None, None, :]).abs()).to(dtype)[None]


def softcapped_attention(q, k, v, softcap: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(c * tanh(q k^T / (sqrt(hd) c)) + b) v, the explicit path for a logit softcap c > 0.

    q, k, v: [B, H, L, hd] -> [B, H, L, hd]; b: Float[1, H, L, L] or None. SDPA cannot apply a function to the
    logits."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = softcap * torch.tanh(scores / softcap)
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the noise level (256 dims) -> Linear -> SiLU -> Linear (cond)."""

    def __init__(self, cond: int, freq_dim: int = 256, normal_init: bool = True):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond), nn.SiLU(), nn.Linear(cond, cond))
        if normal_init:
            nn.init.normal_(self.mlp[0].weight, std=0.02)
            nn.init.normal_(self.mlp[2].weight, std=0.02)

    @staticmethod
    def features(sigma: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
        """[cos(sigma f_j), sin(sigma f_j)], f_j = max_period^(-j/half), j < half = dim/2.  sigma: [B] -> [B, dim]."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
        args = sigma.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, sigma):
        # features are float32; the cast is a no-op for a float32 model and lets a float64 one run
        return self.mlp(self.features(sigma, self.freq_dim).to(self.mlp[0].weight.dtype))


class DiTBlock(nn.Module):
    """adaLN-zero transformer block: gated residual attention (rotary q, k) and gated residual 4x MLP."""

    def __init__(self, dim: int, heads: int, cond: int, dropout: float, softcap: float, qk_norm: bool,
                 normal_init: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: expected a divisor of the hidden size {dim}, got {heads}")
        self.heads, self.dropout, self.softcap = heads, dropout, softcap
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        if qk_norm:
            self.q_norm = nn.LayerNorm(dim // heads)
            self.k_norm = nn.LayerNorm(dim // heads)
        # Zero modulation: every gate starts at 0, so each block starts as the identity (adaLN-zero).
        self.adaLN_modulation = nn.Linear(cond, 6 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)
        for lin in (self.attn_qkv, self.attn_out, self.mlp[0], self.mlp[2]) if normal_init else ():
            nn.init.normal_(lin.weight, std=0.02)

    def attention(self, x: torch.Tensor, cos, sin, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Non-causal multi-head attention. x: [B, L, d] -> [B, L, d]; qkv packs q, k, v, heads contiguous;
        bias: Float[1, H, L, L] added to the scores, or None."""
        B, L, d = x.shape
        q, k, v = self.attn_qkv(x).view(B, L, 3, self.heads, d // self.heads).unbind(dim=2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        if self.softcap > 0:
            out = softcapped_attention(q, k, v, self.softcap, bias)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.attn_out(out.transpose(1, 2).reshape(B, L, d))

    def forward(self, x, cos, sin, c, bias=None):
        """x: [B, L, d], c: [B, cond] -> [B, L, d]:  x += g_a * attn(mod(LN x)); x += g_m * mlp(mod(LN x))."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        h = self.attention(modulate(self.norm1(x), shift_a, scale_a), cos, sin, bias)
        x = x + gate_a * F.dropout(h, self.dropout, self.training)
        h = self.mlp(modulate(self.norm2(x), shift_m, scale_m))
        return x + gate_m * F.dropout(h, self.dropout, self.training)


class FinalLayer(nn.Module):
    """LayerNorm -> adaLN shift/scale -> Linear(d -> C); modulation and linear zero-initialised."""

    def __init__(self, dim: int, classes: int, cond: int):
        super().__init__()
        self.norm_final = LayerNorm(dim)
        self.linear = nn.Linear(dim, classes)
        self.adaLN_modulation = nn.Linear(cond, 2 * dim)
        for lin in (self.linear, self.adaLN_modulation):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def features(self, x, c):
        """The linear's input: mod(LN x) with the per-sequence shift / scale.  x: [B, L, d] -> [B, L, d]."""
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return modulate(self.norm_final(x), shift, scale)

    def forward(self, x, c):
        return self.linear(self.features(x, c))


class DiT(nn.Module):
    """The MDLM / IMDM backbone as a Denoiser: (x_t Long[B, L], eps, t Float[B]) -> logits Float[B, L, C]."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        if config.vocab_size is None or config.mask_id is None:
            raise ValueError("model.vocab_size / model.mask_id: expected the tokenizer's, filled in when the data "
                             f"is opened (DiTConfig.with_vocabulary), got {config.vocab_size} / {config.mask_id}")
        self.config = config
        dims = config.dims
        dropout = dims.dropout
        self.vocab_embed = build_embedding(config)
        normal_init = INITS[config.init]
        self.sigma_map = TimestepEmbedder(dims.cond, normal_init=normal_init)
        self.blocks = nn.ModuleList(
            DiTBlock(dims.hidden, dims.heads, dims.cond, dropout, config.softcap, config.qk_norm, normal_init)
            for _ in range(dims.blocks))
        self.output_layer = FinalLayer(dims.hidden, config.vocab_size, dims.cond)
        self.process = config.process()  # what the kernels read: mask id, schedule, label law, cache rule
        self._schedule = get_schedule(config.schedule)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """MDLM's conditioning sigma_t = -log alpha_t  (Float[B]); zero when time conditioning is off,
        as in the IMDM configs (the embedder then sees a constant)."""
        if not self.config.time_conditioning:
            return torch.zeros_like(t, dtype=torch.float32)
        return -torch.log(self._schedule.alpha(t.float()))

    def _use_bf16(self, x_t: torch.Tensor) -> bool:
        return self.config.bf16 and x_t.device.type == "cuda"

    def hidden(self, x_t: torch.Tensor, eps: torch.Tensor | None, t: torch.Tensor,
               validate: bool = True) -> tuple[torch.Tensor, nn.Linear]:
        """Everything up to the output projection: (h Float[B, L, d], head) with logits = head(h).

        h is in the dtype the head's product runs in (bf16 under the CUDA autocast, else the weights')."""
        h = self.vocab_embed(x_t, eps, validate=validate)  # float32, outside autocast (as the official one)
        c = F.silu(self.sigma_map(self.sigma(t)))
        use_bf16 = self._use_bf16(x_t)
        # q and k are bf16 under autocast: the tables are kept in that dtype, as apply_rotary casts them.
        # (a compiled graph computes them in the graph instead, where they are folded into constants)
        tables = rotary_tables.__wrapped__ if torch.compiler.is_compiling() else rotary_tables
        dtype = torch.bfloat16 if use_bf16 else h.dtype
        cos, sin = tables(x_t.shape[1], h.shape[-1] // self.config.dims.heads, x_t.device, dtype)
        bias = None
        if self.config.local_bias > 0:
            biases = local_attention_bias.__wrapped__ if torch.compiler.is_compiling() else local_attention_bias
            bias = biases(x_t.shape[1], self.config.dims.heads, self.config.local_bias, x_t.device, dtype)
        with torch.autocast(device_type=x_t.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            for block in self.blocks:
                h = block(h, cos, sin, c, bias)
            h = self.output_layer.features(h, c)
        return (h.to(torch.bfloat16) if use_bf16 else h), self.output_layer.linear

    def forward(self, x_t: torch.Tensor, eps: torch.Tensor | None, t: torch.Tensor,
                targets: torch.Tensor | None = None, validate: bool = True,
                head_rows: str = "masked") -> torch.Tensor:
        """logits Float[B, L, C] (at least float32); with targets (Long[B, L], imdm_lab.losses.IGNORE where
        not needed) the SUBS NLL Float[B, L] at the target rows instead, in row chunks (imdm_lab.head_nll,
        on the target rows or, head_rows="all", on every row without a read-back)."""
        h, head = self.hidden(x_t, eps, t, validate=validate)
        if targets is not None:
            return head_nll(h, head, targets, self.config.mask_id, validate=validate, rows=head_rows)
        with torch.autocast(device_type=x_t.device.type, dtype=torch.bfloat16, enabled=self._use_bf16(x_t)):
            logits = head(h)
        # at least float32 logits: SUBS, log-softmax and the ELBO weight -alpha'/(1 - alpha) are then
        # computed in float32 (in bf16, 1 - alpha_t rounds to 0 for t < 4e-3 and the weight becomes inf).
        return logits.to(torch.promote_types(logits.dtype, torch.float32))


# Parameter-name prefixes of the eps path (the label MLP, the learnable label law, the finite table): an
# MDLM has none of them, so importing or adapting one keeps them at their initialisation.
EPS_PATH = ("vocab_embed.imdm_mlp.", "vocab_embed.learnable_noise_", "vocab_embed.mask_table")


def build_embedding(config: DiTConfig) -> MaskEmbedding:
    return MaskEmbedding(config.embed_rows, config.dims.hidden, config.mask_id, labels=config.mask_labels())


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

