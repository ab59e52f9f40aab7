"""Small bidirectional transformers for the toy tasks, implementing the Denoiser protocol.

    net = make_model("demo", V=16, L=4, labels="rand")   # or labels="none" | "randn" | "learnable" | "finite", K=4
    logits = net(x_t, eps, t)                            # Long[B, L], labels, Float[B] -> Float[B, L, V]
    nll = net(x_t, eps, t, targets=x0_or_ignore)         # the SUBS NLL Float[B, L] at the target rows only
    net.process                                          # mask id V, the linear schedule, the label law

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
from imdm_lab.head_nll import head_nll
from imdm_lab.labels import mask_labels
from imdm_lab.process import Process


@dataclass(frozen=True)
class ModelSize:
    dim: int  # d
    blocks: int
    heads: int
    label_dim: int  # D, the width of a continuous mask label


# `synthetic` is the paper's model for the align task (Ugness/IMDM configs/model/synthetic.yaml): d = 128, 4 blocks,
# 4 heads, label_dim 128, no dropout. `demo` fits the 5-minute CPU demo, `tiny` the unit tests.
SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(dim=32, blocks=1, heads=2, label_dim=8),
    "demo": ModelSize(dim=64, blocks=2, heads=4, label_dim=4),
    "synthetic": ModelSize(dim=128, blocks=4, heads=4, label_dim=128),
}


# The schedule the toy models are trained and sampled under: that of the exact engine's curves.
SCHEDULE = "linear"


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

    V data classes, mask id V; labels: a name of imdm_lab.labels.LABEL_NAMES, 'none' (an MDM: no label
    path), 'rand' / 'randn' / 'learnable' (continuous labels through the zero-initialised MLP) or 'finite'
    with K states (a K-state mask table). The model carries its process (mask id, schedule, label law)
    and its length L, which the kernels read."""

    def __init__(self, V: int, L: int, size: ModelSize, labels: str = "none", K: int | None = None):
        super().__init__()
        if size.dim % size.heads:
            raise ValueError(f"size: dim {size.dim} must be a multiple of heads {size.heads}")
        law = mask_labels(labels, dim=size.label_dim, K=K)
        self.V, self.L, self.size = V, L, size
        self.mask_id, self.length = V, L
        self.process = Process(mask_id=V, schedule=SCHEDULE, labels=law)
        self.vocab_embed = MaskEmbedding(V + 1, size.dim, mask_id=V, labels=law)
        self.pos = nn.Parameter(torch.randn(L, size.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(size.dim, size.heads) for _ in range(size.blocks))
        self.norm_final = nn.LayerNorm(size.dim)
        self.out = nn.Linear(size.dim, V)

    def forward(self, x_t: torch.Tensor, eps: torch.Tensor | None = None, t: torch.Tensor | None = None,
                targets: torch.Tensor | None = None, validate: bool = True):
        """logits Float[B, L, V]; with targets (Long[B, L], imdm_lab.losses.IGNORE where not needed) the SUBS
        NLL Float[B, L] of the read-out at the target rows only (imdm_lab.head_nll): the 50 000-way
        read-out of `synthetic` then costs the rows with a target, not B * L."""
        if x_t.dim() != 2 or x_t.shape[1] != self.L:
            raise ValueError(f"x_t: expected a Long[B, {self.L}] tensor, got shape {tuple(x_t.shape)}")
        h = self.vocab_embed(x_t, eps) + self.pos
        for block in self.blocks:
            h = block(h)
        h = self.norm_final(h)
        if targets is not None:
            return head_nll(h, self.out, targets, self.mask_id, validate=validate)
        return self.out(h)

    def eps_mlp_norm(self) -> float:
        """Norm of the last eps-path weight: 0 at initialisation, grows only if training uses eps."""
        return self.vocab_embed.eps_mlp_norm()

    def eps_output_norm(self, samples: int = 4096, generator: torch.Generator | None = None) -> float:
        """RMS over labels of ||MLP(eps) - mean|| (or of the K-table rows): how much the mask embedding
        actually varies with eps, in the units of the token embedding. 0 for an MDM."""
        emb = self.vocab_embed
        if self.process.labels is None:
            return 0.0
        with torch.no_grad():
            eps = self.process.labels.draw(samples, 1, generator=generator)
            x = torch.full((samples, 1), self.mask_id, dtype=torch.int64)
            h = emb(x, eps)[:, 0]
            return float((h - h.mean(0)).pow(2).sum(-1).mean().sqrt())


def make_model(size: str, V: int, L: int, labels: str = "none", K: int | None = None, seed: int = 0) -> ToyDenoiser:
    """A fresh ToyDenoiser of a named size, initialised from torch.manual_seed(seed)."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {sorted(SIZES)}, got {size!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyDenoiser(V, L, SIZES[size], labels, K)
