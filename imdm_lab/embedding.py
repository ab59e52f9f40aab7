"""The IMDM input embedding: E[x] at visible positions, E[mask] + MLP(eps) at masked ones.

The last MLP layer is zero-initialised and has no bias (E[mask] plays the bias), so a fresh IMDM embedding
equals MDLM's and MDLM weights load unchanged (Ugness/IMDM models/dit.py, the eps-MLP of
`vocab_embed`). Parameter names match the
official DiT's `vocab_embed` so checkpoints map 1:1:

    embedding                  C' x d bare Parameter, Kaiming-uniform (a = sqrt(5))
    imdm_mlp.0.{weight,bias}   Linear(D -> 4d), weight trunc-normal(std 0.02, +-0.04), bias 0
    imdm_mlp.2.weight          Linear(4d -> d, no bias), zero
    learnable_noise_mu/sigma   D-vectors (kind 'learnable'): eps -> mu + sigma * eps, init 0 / 1
    mask_table                 K x d, zero (kind 'finite'); frozen when K = 1

The eps path follows the label law (imdm_lab.labels): continuous labels go through the MLP, finite ones
index a K-state mask table, and without labels (an MDM) there is no eps path at all.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from imdm_lab.labels import MaskLabels


def _imdm_init(module: MaskEmbedding, labels: MaskLabels, dim: int):
    D = labels.dim
    module.imdm_mlp = nn.Sequential(nn.Linear(D, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim, bias=False))
    nn.init.trunc_normal_(module.imdm_mlp[0].weight, std=0.02, a=-0.04, b=0.04)
    nn.init.zeros_(module.imdm_mlp[0].bias)
    nn.init.zeros_(module.imdm_mlp[2].weight)
    if labels.kind == "learnable":
        module.learnable_noise_mu = nn.Parameter(torch.zeros(D))
        module.learnable_noise_sigma = nn.Parameter(torch.ones(D))


def _finite_init(module: MaskEmbedding, labels: MaskLabels, dim: int):
    module.mask_table = nn.Parameter(torch.zeros(labels.K, dim), requires_grad=labels.K > 1)


def _imdm_offset(module: MaskEmbedding, eps: torch.Tensor) -> torch.Tensor:
    """MLP(eps): Float[B, L, D] -> Float[B, L, d] (learnable labels first become mu + sigma * eps)."""
    if module.labels.kind == "learnable":
        eps = module.learnable_noise_mu + module.learnable_noise_sigma * eps
    return module.imdm_mlp(eps.to(module.embedding.dtype))


def _finite_offset(module: MaskEmbedding, eps: torch.Tensor) -> torch.Tensor:
    """mask_table[eps]: Long[B, L] -> Float[B, L, d]."""
    return module.mask_table[eps]


def _imdm_norm(module: MaskEmbedding) -> torch.Tensor:
    return module.imdm_mlp[2].weight.detach().norm()


def _finite_norm(module: MaskEmbedding) -> torch.Tensor:
    return module.mask_table.detach().norm()


# eps path of a label law (EPS_PATHS[path_of(labels)]) -> (init, eps -> offset of the mask embedding, usage norm)
EPS_PATHS = {
    "mlp": (_imdm_init, _imdm_offset, _imdm_norm),
    "table": (_finite_init, _finite_offset, _finite_norm),
    "none": (None, None, None),
}


def path_of(labels: MaskLabels | None) -> str:
    """The eps path that reads `labels`: 'mlp' (continuous), 'table' (finite) or 'none' (an MDM)."""
    return "none" if labels is None else "mlp" if labels.continuous else "table"


class MaskEmbedding(nn.Module):
    """Token embedding with a label-dependent mask embedding.

    num_embeddings: C' rows (must include mask_id); dim: d; mask_id: the mask token id; labels: the law
    of the labels eps this layer reads (None: an MDM, no eps path).
    forward(x_t: Long[B, L], eps: Float[B, L, D] | Long[B, L] | None) -> Float[B, L, d]."""

    def __init__(self, num_embeddings: int, dim: int, mask_id: int, labels: MaskLabels | None = None):
        super().__init__()
        if not 0 <= mask_id < num_embeddings:
            raise ValueError(f"mask_id: expected an id in [0, {num_embeddings}), got {mask_id!r}")
        if labels is not None and not isinstance(labels, MaskLabels):
            raise ValueError(f"labels: expected a MaskLabels or None, got {type(labels).__name__}")
        self.labels, self.mask_id, self.dim = labels, mask_id, dim
        self.embedding = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))
        init = EPS_PATHS[path_of(labels)][0]
        if init is not None:
            init(self, labels, dim)

    def forward(self, x_t: torch.Tensor, eps: torch.Tensor | None = None, validate: bool = True) -> torch.Tensor:
        """validate=False: the id range of x_t is trusted (not read back to the host)."""
        if x_t.dim() != 2 or x_t.dtype != torch.int64:
            raise ValueError(f"x_t: expected a Long[B, L] tensor, got shape {tuple(x_t.shape)} {x_t.dtype}")
        if validate and x_t.numel() and (int(x_t.min()) < 0 or int(x_t.max()) >= self.embedding.shape[0]):
            raise ValueError(f"x_t: expected token ids in [0, {self.embedding.shape[0]}), got range "
                             f"[{int(x_t.min())}, {int(x_t.max())}]")
        h = self.embedding[x_t]
        offset_fn = EPS_PATHS[path_of(self.labels)][1]
        if offset_fn is None:
            return h
        if eps is None:
            raise ValueError(f"eps: expected {self.labels.kind!r} mask labels, got None")
        self.labels.check(eps, *x_t.shape)
        # The eps path runs everywhere and is gated by the mask indicator, as in the official DiT.
        masked = (x_t == self.mask_id)[..., None].to(h.dtype)
        return h + masked * offset_fn(self, eps)

    def eps_mlp_norm(self) -> float:
        """Frobenius norm of the last eps-path weight (0 for a fresh model): how much eps is used."""
        norm_fn = EPS_PATHS[path_of(self.labels)][2]
        return 0.0 if norm_fn is None else float(norm_fn(self))
