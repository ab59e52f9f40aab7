"""The SUBS negative log-likelihood of a linear output head, only at the rows that need it, in row chunks.

The ELBO needs -log p(x_0^i | x_t) at masked positions only (visible ones contribute 0 through the
carry-over), with p = softmax(z_i) over the classes other than the mask (SUBS) and z_i = W h_i + b:

    nll_i = logsumexp_{c != mask} z_ic - z_{i, x_i}
    d nll_i / d z_ic = softmax_{c != mask}(z_i)_c - [c = x_i]      (0 at the mask class)

Building z for every position costs B * L * C floats several times over (logits, masked copy,
log-softmax, their gradients). Here the head runs on the target rows only, `chunk` rows at a time, and
the backward recomputes each chunk's logits from h instead of keeping them, so the extra memory is
O(chunk * C). The computation per row is the one of imdm_lab.losses.subs_log_probs (mask logit set to
NEG_INF, log-softmax, gather), so the values agree with the full path to rounding. One [chunk, C]
buffer is alive at a time in either direction (two for a bf16 product: its output and the float32 copy).

Both directions are torch.library custom ops: torch.compile sees one node with a static output shape.
Which rows the head runs on (`rows`, a registry):
- "masked": the target rows only, selected with one nonzero per direction (a host sync: the number of
  chunks depends on the data); the head's FLOPs are spent on the masked rows alone.
- "all": every row, in fixed chunks of B * L, rows without a target set to exactly 0 by a where; no
  data-dependent shape, nothing read back, at the price of the head's FLOPs on the visible rows too
  (1 / E[masked fraction] times the masked-row cost: about 2x for t ~ U(0, 1) under the linear schedule).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imdm_lab.losses import IGNORE, NEG_INF

DEFAULT_CHUNK = 1024  # rows per chunk: 1024 x 50 258 float32 logits = 206 MB


def _out_dtype(h: torch.Tensor) -> torch.dtype:
    return torch.promote_types(h.dtype, torch.float32)


def _chunk_logits(h_rows, weight, bias, mask_id: int) -> torch.Tensor:
    """z = W h + b in h's dtype (W, b already cast to it), then at least float32, the mask logit (if a
    class) set to NEG_INF. h_rows: [n, d] -> [n, C]; the casts of a Linear under autocast + .float()."""
    z = F.linear(h_rows, weight, bias)
    z = z.to(_out_dtype(h_rows))
    if mask_id < z.shape[-1]:
        z[:, mask_id] = NEG_INF  # in place: z is a fresh tensor, and one [n, C] buffer fewer
    return z


def _exp_shifted_(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In place: z <- exp(z - max_c z); returns (z, max). Float[n, C] -> (Float[n, C], Float[n, 1])."""
    top = z.max(-1, keepdim=True).values
    return z.sub_(top).exp_(), top


def _masked_chunks(targets: torch.Tensor, chunk: int):
    """Index chunks Long[<= chunk] of the target rows (one nonzero: the count is read back)."""
    rows = (targets.reshape(-1) != IGNORE).nonzero()[:, 0]
    return (rows[start:start + chunk] for start in range(0, rows.numel(), chunk))


def _all_chunks(targets: torch.Tensor, chunk: int):
    """Slices of every row, in chunks of a size known from the shape alone (no read-back)."""
    n = targets.numel()
    return (slice(start, min(start + chunk, n)) for start in range(0, n, chunk))


# rows -> the chunks of flattened rows the head runs on
ROWS = {"masked": _masked_chunks, "all": _all_chunks}


def _chunk_targets(flat_t: torch.Tensor, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets Long[n] with IGNORE replaced by class 0 for the gather, valid Bool[n])."""
    t = flat_t[idx]
    valid = t != IGNORE
    return torch.where(valid, t, 0), valid


@torch.library.custom_op("imdm_lab::head_nll", mutates_args=())
def _head_nll(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
              mask_id: int, chunk: int, rows: str) -> torch.Tensor:
    flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    nll = torch.zeros(flat_t.shape, dtype=_out_dtype(h), device=h.device)
    w, b = weight.to(h.dtype), bias.to(h.dtype)  # cast once, not per chunk
    with torch.autocast(h.device.type, enabled=False):
        for idx in ROWS[rows](targets, chunk):
            z = _chunk_logits(flat_h[idx], w, b, mask_id)
            t, valid = _chunk_targets(flat_t, idx)
            picked = z.gather(1, t[:, None])[:, 0]
            e, top = _exp_shifted_(z)  # log-softmax without a second [n, C] buffer
            value = e.sum(-1).log_() + top[:, 0] - picked
            nll[idx] = torch.where(valid, value, torch.zeros_like(value))
    return nll.view(targets.shape)


@_head_nll.register_fake
def _(h, weight, bias, targets, mask_id, chunk, rows):
    return h.new_empty(targets.shape, dtype=_out_dtype(h))


@torch.library.custom_op("imdm_lab::head_nll_backward", mutates_args=())
def _head_nll_backward(grad: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       targets: torch.Tensor, mask_id: int, chunk: int,
                       rows: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat_h, flat_t, flat_g = h.reshape(-1, h.shape[-1]), targets.reshape(-1), grad.reshape(-1)
    grad_h = torch.zeros_like(flat_h)
    grad_w, grad_b = torch.zeros_like(weight), torch.zeros_like(bias)
    w, b = weight.to(h.dtype), bias.to(h.dtype)
    with torch.autocast(h.device.type, enabled=False):
        for idx in ROWS[rows](targets, chunk):
            h_rows = flat_h[idx]
            t, valid = _chunk_targets(flat_t, idx)
            dz, _ = _exp_shifted_(_chunk_logits(h_rows, w, b, mask_id))
            dz.div_(dz.sum(-1, keepdim=True))  # softmax, in place
            dz.scatter_add_(1, t[:, None], torch.full_like(dz[:, :1], -1.0))
            if mask_id < dz.shape[-1]:
                dz[:, mask_id] = 0.0  # the mask logit is a constant (NEG_INF), it gets no gradient
            # rows without a target have the constant output 0: their gradient is exactly 0
            g = torch.where(valid, flat_g[idx], torch.zeros_like(flat_g[idx]))
            dz = dz.mul_(g[:, None].to(dz.dtype)).to(h.dtype)
            grad_h[idx] = dz @ w
            if dz.dtype == grad_w.dtype:
                grad_w.addmm_(dz.T, h_rows)  # accumulated in place: no weight-sized temporary
            else:
                grad_w += (dz.T @ h_rows).to(grad_w.dtype)
            grad_b += dz.sum(0).to(grad_b.dtype)
    return grad_h.view(h.shape), grad_w, grad_b


@_head_nll_backward.register_fake
def _(grad, h, weight, bias, targets, mask_id, chunk, rows):
    return torch.empty_like(h), torch.empty_like(weight), torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    h, weight, bias, targets, mask_id, chunk, rows = inputs
    ctx.save_for_backward(h, weight, bias, targets)
    ctx.mask_id, ctx.chunk, ctx.rows = mask_id, chunk, rows


def _backward(ctx, grad):
    h, weight, bias, targets = ctx.saved_tensors
    grad_h, grad_w, grad_b = _head_nll_backward(grad, h, weight, bias, targets, ctx.mask_id, ctx.chunk,
                                                ctx.rows)
    return grad_h, grad_w, grad_b, None, None, None, None


_head_nll.register_autograd(_backward, setup_context=_setup_context)


def head_nll(h: torch.Tensor, head: nn.Linear, targets: torch.Tensor, mask_id: int,
             chunk: int = DEFAULT_CHUNK, validate: bool = True, rows: str = "masked") -> torch.Tensor:
    """-log p_SUBS(targets_i | h_i) of the linear head z = head(h), at the rows with a target.

    h: Float[B, L, d] (the head's input, in the dtype its product is computed in), head: Linear(d -> C),
    targets: Long[B, L] with ids in [0, C) or IGNORE (row not needed) -> Float[B, L] in at least float32,
    0 at IGNORE rows. Differentiable in h, head.weight and head.bias; nothing of size B * L * C is kept.
    validate=False skips the read-back of the target range; rows="all" runs the head on every row (no
    nonzero, nothing read back; extra FLOPs on the rows without a target), "masked" on the target rows."""
    if not isinstance(h, torch.Tensor) or h.dim() != 3 or not h.is_floating_point():
        got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"h: expected a float tensor of shape [B, L, d], got {got}")
    if not isinstance(head, nn.Linear) or head.in_features != h.shape[-1]:
        raise ValueError(f"head: expected an nn.Linear from {h.shape[-1]} features, got {head!r}")
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.int64 or targets.shape != h.shape[:2]:
        got = f"{tuple(targets.shape)} {targets.dtype}" if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"targets: expected a Long tensor of shape {tuple(h.shape[:2])}, got {got}")
    C = head.out_features
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or not 0 <= mask_id <= C:
        raise ValueError(f"mask_id: expected an integer in [0, {C}], got {mask_id!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk: expected an integer >= 1, got {chunk!r}")
    if rows not in ROWS:
        raise ValueError(f"rows: expected one of {sorted(ROWS)}, got {rows!r}")
    if validate and bool(((targets != IGNORE) & ((targets < 0) | (targets >= C))).any()):
        raise ValueError(f"targets: expected ids in [0, {C}) or IGNORE = {IGNORE}")
    bias = head.bias if head.bias is not None else head.weight.new_zeros(C)
    return _head_nll(h, head.weight, bias, targets, mask_id, chunk, rows)
