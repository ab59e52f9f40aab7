"""The IMDM input embedding: E[x] at visible positions, E[mask] + MLP(eps) at masked ones.

The last MLP layer is zero-initialised and has no bias (E[mask] plays the bias), so a fresh IMDM embedding
equals MDLM's and MDLM weights load unchanged (imdm-reference sec. 3.3). Parameter names match the
official DiT's `vocab_embed` so checkpoints map 1:1:

    embedding                  C' x d bare Parameter, Kaiming-uniform (a = sqrt(5))
    imdm_mlp.0.{weight,bias}   Linear(D -> 4d), weight trunc-normal(std 0.02, +-0.04), bias 0
    imdm_mlp.2.weight          Linear(4d -> d, no bias), zero
    learnable_noise_mu/sigma   D-vectors (kind 'learnable'): eps -> mu + sigma * eps, init 0 / 1
    mask_table                 K x d, zero (kind 'finite'); frozen when K = 1

Variants (`mode`): 'imdm' (continuous labels through the MLP), 'finite' (a K-state mask table) and
'mdlm' (no eps path at all).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from imdm_lab.masking import MaskNoise


def _imdm_init(module: "MaskEmbedding", noise: MaskNoise, dim: int):
    D = noise.dim
    module.imdm_mlp = nn.Sequential(nn.Linear(D, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim, bias=False))
    nn.init.trunc_normal_(module.imdm_mlp[0].weight, std=0.02, a=-0.04, b=0.04)
    nn.init.zeros_(module.imdm_mlp[0].bias)
    nn.init.zeros_(module.imdm_mlp[2].weight)
    if noise.kind == "learnable":
        module.learnable_noise_mu = nn.Parameter(torch.zeros(D))
        module.learnable_noise_sigma = nn.Parameter(torch.ones(D))


def _finite_init(module: "MaskEmbedding", noise: MaskNoise, dim: int):
    module.mask_table = nn.Parameter(torch.zeros(noise.K, dim), requires_grad=noise.K > 1)


def _imdm_offset(module: "MaskEmbedding", eps: torch.Tensor) -> torch.Tensor:
    """MLP(eps): Float[B, L, D] -> Float[B, L, d] (learnable labels first become mu + sigma * eps)."""
    if module.noise.kind == "learnable":
        eps = module.learnable_noise_mu + module.learnable_noise_sigma * eps
    return module.imdm_mlp(eps.to(module.embedding.dtype))


def _finite_offset(module: "MaskEmbedding", eps: torch.Tensor) -> torch.Tensor:
    """mask_table[eps]: Long[B, L] -> Float[B, L, d]."""
    return module.mask_table[eps]


def _imdm_norm(module: "MaskEmbedding") -> torch.Tensor:
    return module.imdm_mlp[2].weight.detach().norm()


def _finite_norm(module: "MaskEmbedding") -> torch.Tensor:
    return module.mask_table.detach().norm()


# mode -> (noise kinds it accepts, init of the eps path, eps -> offset of the mask embedding, usage norm)
MODES = {
    "imdm": (("rand", "randn", "learnable"), _imdm_init, _imdm_offset, _imdm_norm),
    "finite": (("finite",), _finite_init, _finite_offset, _finite_norm),
    "mdlm": ((), None, None, None),
}


class MaskEmbedding(nn.Module):
    """Token embedding with a label-dependent mask embedding.

    num_embeddings: C' rows (must include mask_id); dim: d; mask_id: the mask token id;
    mode: 'imdm' | 'finite' | 'mdlm'; noise: the MaskNoise whose labels this layer reads (not for 'mdlm').
    forward(x_t: Long[B, L], eps: Float[B, L, D] | Long[B, L] | None) -> Float[B, L, d]."""

    def __init__(self, num_embeddings: int, dim: int, mask_id: int, mode: str = "imdm",
                 noise: MaskNoise | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {sorted(MODES)}, got {mode!r}")
        if not 0 <= mask_id < num_embeddings:
            raise ValueError(f"mask_id: expected an id in [0, {num_embeddings}), got {mask_id!r}")
        kinds, init, _, _ = MODES[mode]
        if kinds and (noise is None or noise.kind not in kinds):
            raise ValueError(f"noise: expected a MaskNoise of kind {' | '.join(kinds)} for mode {mode!r}, "
                             f"got {noise!r}")
        self.mode, self.noise, self.mask_id, self.dim = mode, (noise if kinds else None), mask_id, dim
        self.embedding = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))
        if init is not None:
            init(self, noise, dim)

    def forward(self, x_t: torch.Tensor, eps: torch.Tensor | None = None, validate: bool = True) -> torch.Tensor:
        """validate=False: the id range of x_t is trusted (not read back to the host)."""
        if x_t.dim() != 2 or x_t.dtype != torch.int64:
            raise ValueError(f"x_t: expected a Long[B, L] tensor, got shape {tuple(x_t.shape)} {x_t.dtype}")
        if validate and x_t.numel() and (int(x_t.min()) < 0 or int(x_t.max()) >= self.embedding.shape[0]):
            raise ValueError(f"x_t: expected token ids in [0, {self.embedding.shape[0]}), got range "
                             f"[{int(x_t.min())}, {int(x_t.max())}]")
        h = self.embedding[x_t]
        offset_fn = MODES[self.mode][2]
        if offset_fn is None:
            return h
        if eps is None:
            raise ValueError(f"eps: expected mask labels for mode {self.mode!r}, got None")
        self.noise.check(eps, *x_t.shape)
        # The eps path runs everywhere and is gated by the mask indicator, as in the official DiT.
        masked = (x_t == self.mask_id)[..., None].to(h.dtype)
        return h + masked * offset_fn(self, eps)

    def eps_mlp_norm(self) -> float:
        """Frobenius norm of the last eps-path weight (0 for a fresh model): how much eps is used."""
        norm_fn = MODES[self.mode][3]
        return 0.0 if norm_fn is None else float(norm_fn(self))
