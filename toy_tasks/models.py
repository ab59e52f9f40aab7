"""Small bidirectional transformers for the toy tasks, implementing the Denoiser protocol.

    net = make_model("demo", V=16, L=4, eps="rand")      # or eps="mdlm" | "randn" | "learnable" | "k4"
    logits = net(x_t, eps, t)                            # Long[B, L], labels, Float[B] -> Float[B, L, V]

The input layer is `imdm_lab.embedding.MaskEmbedding` (E[x] at visible positions, E[mask] + MLP(eps) at
masked ones), then pre-LayerNorm blocks of full (non-causal) self-attention and a 4x GELU MLP, a final
LayerNorm and a linear read-out to the V data classes. Like the paper's IMDM configs there is no time
conditioning: t reaches the network only through the mask pattern, so the sampler's cache is exact.
Positions get a learned absolute embedding (L is tiny and fixed per task).
The mask token is id V (one row more in the embedding than output classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imdm_lab.embedding import MaskEmbedding
from imdm_lab.masking import MaskNoise


@dataclass(frozen=True)
class ModelSize:
    dim: int  # d
    blocks: int
    heads: int
    noise_dim: int  # D, the width of a continuous mask label


# `synthetic` is the paper's model for the align task (imdm-reference sec. 3.4, 7): d = 128, 4 blocks,
# 4 heads, noise_dim 128, no dropout. `demo` fits the 5-minute CPU demo, `tiny` the unit tests.
SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(dim=32, blocks=1, heads=2, noise_dim=8),
    "demo": ModelSize(dim=64, blocks=2, heads=4, noise_dim=4),
    "synthetic": ModelSize(dim=128, blocks=4, heads=4, noise_dim=128),
}


def _continuous(kind):
    return lambda size: ("imdm", MaskNoise(kind, dim=size.noise_dim))


# label variant -> size -> (MaskEmbedding mode, MaskNoise or None); 'kN' (N >= 1) is a finite K-state mask.
EPS_VARIANTS = {
    "mdlm": lambda size: ("mdlm", None),
    "rand": _continuous("rand"),
    "randn": _continuous("randn"),
    "learnable": _continuous("learnable"),
}


def eps_variant(name: str, size: ModelSize) -> tuple[str, MaskNoise | None]:
    """('mdlm' | 'imdm' | 'finite', noise) of a label variant name such as 'rand' or 'k16'."""
    if name in EPS_VARIANTS:
        return EPS_VARIANTS[name](size)
    if name.startswith("k") and name[1:].isdigit() and int(name[1:]) >= 1:
        return "finite", MaskNoise("finite", K=int(name[1:]))
    raise ValueError(f"eps: expected one of {sorted(EPS_VARIANTS)} or kN (a finite N-state mask, N >= 1), "
                     f"got {name!r}")


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)); Float[B, L, d] -> Float[B, L, d] (bidirectional)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, L, d = h.shape
        q, k, v = self.attn_qkv(self.norm1(h)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, d / heads], no causal mask
        h = h + self.attn_out(a.transpose(1, 2).reshape(B, L, d))
        return h + self.mlp(self.norm2(h))


class ToyDenoiser(nn.Module):
    """Denoiser (x_t Long[B, L], eps Float[B, L, D] | Long[B, L] | None, t Float[B]) -> logits Float[B, L, V].

    V data classes, mask id V; eps variant 'mdlm' (an MDM: no label path), 'rand' / 'randn' / 'learnable'
    (continuous labels through the zero-initialised MLP) or 'kN' (a finite N-state mask table)."""

    def __init__(self, V: int, L: int, size: ModelSize, eps: str = "mdlm"):
        super().__init__()
        if size.dim % size.heads:
            raise ValueError(f"size: dim {size.dim} must be a multiple of heads {size.heads}")
        mode, noise = eps_variant(eps, size)
        self.V, self.L, self.size, self.eps_name = V, L, size, eps
        self.mask_id = V
        self.noise = noise  # the law the sampler and the losses draw labels from (None for an MDM)
        self.vocab_embed = MaskEmbedding(V + 1, size.dim, mask_id=V, mode=mode, noise=noise)
        self.pos = nn.Parameter(torch.randn(L, size.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(size.dim, size.heads) for _ in range(size.blocks))
        self.norm_final = nn.LayerNorm(size.dim)
        self.out = nn.Linear(size.dim, V)

    def forward(self, x_t: torch.Tensor, eps: torch.Tensor | None = None, t: torch.Tensor | None = None):
        if x_t.dim() != 2 or x_t.shape[1] != self.L:
            raise ValueError(f"x_t: expected a Long[B, {self.L}] tensor, got shape {tuple(x_t.shape)}")
        h = self.vocab_embed(x_t, eps) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm_final(h))

    def eps_mlp_norm(self) -> float:
        """Norm of the last eps-path weight: 0 at initialisation, grows only if training uses eps."""
        return self.vocab_embed.eps_mlp_norm()

    def eps_output_norm(self, samples: int = 4096, generator: torch.Generator | None = None) -> float:
        """RMS over labels of ||MLP(eps) - mean|| (or of the K-table rows): how much the mask embedding
        actually varies with eps, in the units of the token embedding. 0 for an MDM."""
        emb = self.vocab_embed
        if self.noise is None:
            return 0.0
        with torch.no_grad():
            eps = self.noise.draw(samples, 1, generator=generator)
            x = torch.full((samples, 1), self.mask_id, dtype=torch.int64)
            h = emb(x, eps)[:, 0]
            return float((h - h.mean(0)).pow(2).sum(-1).mean().sqrt())


def make_model(size: str, V: int, L: int, eps: str = "mdlm", seed: int = 0) -> ToyDenoiser:
    """A fresh ToyDenoiser of a named size, initialised from torch.manual_seed(seed)."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {sorted(SIZES)}, got {size!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyDenoiser(V, L, SIZES[size], eps)
