"""A from-the-equations forward pass of the official MDLM / IMDM DiT over a state dict with its key names,
written independently of scale/model/dit.py (explicit rotation pairs, explicit attention, no nn modules),
plus a builder of random official-layout state dicts. Used to check the DiT and the MDLM importer.

The IMDM eps path under its official names: `vocab_embed.imdm_mlp.{0,2}` (Linear D -> 4d, exact GELU,
Linear 4d -> d without bias), `vocab_embed.learnable_noise_{mu,sigma}` of shape (1, 1, D) (learnable labels
mu + sigma * eps), or for K finite mask states the table `vocab_embed.imdm_mlp.weight` (K x d); q_norm /
k_norm are LayerNorms (weight and bias) over the head dimension, applied before the rotation."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def official_state_dict(vocab: int, hidden: int, blocks: int, heads: int, cond: int, seed: int = 0,
                        scale: float = 0.2, label_dim: int = 0, learnable: bool = False, num_mask: int = 0,
                        qk_norm: bool = False) -> dict[str, torch.Tensor]:
    """Random weights under the official key layout (`backbone.` prefix, rotary inv_freq buffer).
    Modulations are non-zero so that their chunk order matters. label_dim > 0 adds the eps-MLP (and
    with `learnable` the label parameters); num_mask > 0 the finite-K table instead."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * scale

    sd = {"backbone.vocab_embed.embedding": r(vocab, hidden),
          "backbone.sigma_map.mlp.0.weight": r(cond, 256), "backbone.sigma_map.mlp.0.bias": r(cond),
          "backbone.sigma_map.mlp.2.weight": r(cond, cond), "backbone.sigma_map.mlp.2.bias": r(cond),
          "backbone.rotary_emb.inv_freq": 1.0 / (10_000 ** (torch.arange(0, hidden // heads, 2).float()
                                                            / (hidden // heads)))}
    if label_dim:
        if learnable:
            sd["backbone.vocab_embed.learnable_noise_mu"] = r(1, 1, label_dim)
            sd["backbone.vocab_embed.learnable_noise_sigma"] = 1 + r(1, 1, label_dim)
        sd.update({"backbone.vocab_embed.imdm_mlp.0.weight": r(4 * hidden, label_dim),
                   "backbone.vocab_embed.imdm_mlp.0.bias": r(4 * hidden),
                   "backbone.vocab_embed.imdm_mlp.2.weight": r(hidden, 4 * hidden)})
    if num_mask:
        sd["backbone.vocab_embed.imdm_mlp.weight"] = r(num_mask, hidden)
    for n in range(blocks):
        p = f"backbone.blocks.{n}."
        sd.update({p + "norm1.weight": 1 + r(hidden), p + "attn_qkv.weight": r(3 * hidden, hidden),
                   p + "attn_out.weight": r(hidden, hidden), p + "norm2.weight": 1 + r(hidden),
                   p + "mlp.0.weight": r(4 * hidden, hidden), p + "mlp.0.bias": r(4 * hidden),
                   p + "mlp.2.weight": r(hidden, 4 * hidden), p + "mlp.2.bias": r(hidden),
                   p + "adaLN_modulation.weight": r(6 * hidden, cond), p + "adaLN_modulation.bias": r(6 * hidden)})
        if qk_norm:
            hd = hidden // heads
            sd.update({p + "q_norm.weight": 1 + r(hd), p + "q_norm.bias": r(hd),
                       p + "k_norm.weight": 1 + r(hd), p + "k_norm.bias": r(hd)})
    sd.update({"backbone.output_layer.norm_final.weight": 1 + r(hidden),
               "backbone.output_layer.linear.weight": r(vocab, hidden),
               "backbone.output_layer.linear.bias": r(vocab),
               "backbone.output_layer.adaLN_modulation.weight": r(2 * hidden, cond),
               "backbone.output_layer.adaLN_modulation.bias": r(2 * hidden)})
    return sd


def _ln(x, w, b=0.0):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * w + b


def _embed(w: dict, x: torch.Tensor, eps, mask_id) -> torch.Tensor:
    """E[x], plus at mask positions MLP(eps) (continuous labels; learnable: MLP(mu + sigma eps)) or the
    finite table's row eps."""
    h = w["vocab_embed.embedding"][x]
    if eps is None:
        return h
    if "vocab_embed.imdm_mlp.weight" in w:  # K finite mask states
        offset = w["vocab_embed.imdm_mlp.weight"][eps]
    else:
        e = eps.double()
        if "vocab_embed.learnable_noise_mu" in w:
            e = w["vocab_embed.learnable_noise_mu"] + w["vocab_embed.learnable_noise_sigma"] * e
        hidden = F.gelu(e @ w["vocab_embed.imdm_mlp.0.weight"].T + w["vocab_embed.imdm_mlp.0.bias"])
        offset = hidden @ w["vocab_embed.imdm_mlp.2.weight"].T
    return h + (x == mask_id)[..., None].double() * offset


def _rotate(x):
    """x: [B, L, H, hd]; pair (j, j + hd/2) of position p turns by p * 10000^(-2j/hd)."""
    B, L, H, hd = x.shape
    out = x.clone()
    for j in range(hd // 2):
        theta = torch.arange(L, dtype=torch.float64) * 10_000 ** (-2 * j / hd)
        c, s = torch.cos(theta)[None, :, None], torch.sin(theta)[None, :, None]
        a, b = x[..., j], x[..., j + hd // 2]
        out[..., j], out[..., j + hd // 2] = a * c - b * s, a * s + b * c
    return out


def reference_logits(sd: dict, x: torch.Tensor, sigma: torch.Tensor, heads: int, softcap: float = 0.0,
                     eps: torch.Tensor | None = None, mask_id: int | None = None, local_bias: float = 0.0):
    """Logits Float64[B, L, V] of the official DiT at noise level sigma (Float[B]); an IMDM reads the
    labels eps (Float[B, L, D] or Long[B, L]) at the positions holding mask_id. local_bias s > 0 adds
    -s / 2^h |q - k| to head h's scores (the project's option beyond the official model)."""
    w = {k.removeprefix("backbone."): v.double() for k, v in sd.items()}
    h = _embed(w, x, eps, mask_id)
    half = 128
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float64) / half)
    feats = torch.cat([torch.cos(sigma.double()[:, None] * freqs), torch.sin(sigma.double()[:, None] * freqs)], -1)
    c = F.silu(F.linear(F.silu(F.linear(feats, w["sigma_map.mlp.0.weight"], w["sigma_map.mlp.0.bias"])),
                        w["sigma_map.mlp.2.weight"], w["sigma_map.mlp.2.bias"]))
    B, L, d = h.shape
    hd = d // heads
    n_blocks = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
    for n in range(n_blocks):
        def p(k, n=n):
            return w[f"blocks.{n}.{k}"]
        mod = (c @ p("adaLN_modulation.weight").T + p("adaLN_modulation.bias"))[:, None, :]
        sh1, sc1, g1, sh2, sc2, g2 = (mod[..., i * d:(i + 1) * d] for i in range(6))
        a = _ln(h, p("norm1.weight")) * (1 + sc1) + sh1
        qkv = (a @ p("attn_qkv.weight").T).reshape(B, L, 3, heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if f"blocks.{n}.q_norm.weight" in w:
            q, k = _ln(q, p("q_norm.weight"), p("q_norm.bias")), _ln(k, p("k_norm.weight"), p("k_norm.bias"))
        q, k = _rotate(q), _rotate(k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        if softcap > 0:
            scores = softcap * torch.tanh(scores / softcap)
        for head in range(heads):
            for i in range(L):
                for j in range(L):
                    scores[:, head, i, j] -= local_bias / 2 ** head * abs(i - j)
        att = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, L, d)
        h = h + g1 * (att @ p("attn_out.weight").T)
        m = _ln(h, p("norm2.weight")) * (1 + sc2) + sh2
        m = F.gelu(m @ p("mlp.0.weight").T + p("mlp.0.bias"), approximate="tanh") @ p("mlp.2.weight").T \
            + p("mlp.2.bias")
        h = h + g2 * m
    mod = (c @ w["output_layer.adaLN_modulation.weight"].T + w["output_layer.adaLN_modulation.bias"])[:, None]
    shift, scale = mod[..., :d], mod[..., d:]
    h = _ln(h, w["output_layer.norm_final.weight"]) * (1 + scale) + shift
    return h @ w["output_layer.linear.weight"].T + w["output_layer.linear.bias"]
