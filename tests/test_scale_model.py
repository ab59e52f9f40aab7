"""The DiT against an independent from-the-equations forward of the official backbone, and its
structural properties (adaLN-zero identity, zero-initialised output, rotary relativity, IMDM = MDLM
while the eps path is zero)."""
import math

import pytest
import torch
from dit_reference import official_state_dict, reference_logits

from imdm_lab.losses import elbo
from scale.model.dit import SIZES, DiT, DiTConfig, apply_rotary, rotary_cos_sin

V, MASK = 50, 49
DIMS = SIZES["tiny-cpu"]


def _load_official(model: DiT, sd: dict) -> None:
    own = model.state_dict()
    weights = {k.removeprefix("backbone."): v for k, v in sd.items() if "inv_freq" not in k}
    model.load_state_dict({**own, **weights})


def _inputs(seed=0, B=3, L=12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V - 1, (B, L), generator=g)
    x[torch.rand(B, L, generator=g) < 0.5] = MASK
    return x, torch.rand(B, generator=g).clamp_min(0.05)


@pytest.mark.parametrize("softcap,time_conditioning,local_bias", [(0.0, False, 0.0), (0.0, True, 0.0),
                                                                  (3.0, True, 0.0), (0.0, False, 0.7),
                                                                  (3.0, False, 0.7)])
def test_dit_equals_the_official_equations(softcap, time_conditioning, local_bias):
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=1)
    model = DiT(DiTConfig(vocab_size=V, mask_id=MASK, labels="none", softcap=softcap,
                          time_conditioning=time_conditioning, local_bias=local_bias)).eval()
    _load_official(model, sd)
    x, t = _inputs()
    sigma = -torch.log(1 - 0.999 * t) if time_conditioning else torch.zeros_like(t)
    want = reference_logits(sd, x, sigma, DIMS.heads, softcap, local_bias=local_bias)
    with torch.no_grad():
        got = model(x, None, t).double()
    assert want.abs().max() > 0.5  # a non-trivial comparison
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


def test_imdm_with_zero_eps_path_gives_the_mdlm_logits():
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=2)
    mdlm = DiT(DiTConfig(vocab_size=V, mask_id=MASK, labels="none")).eval()
    imdm = DiT(DiTConfig(vocab_size=V, mask_id=MASK, labels="rand", label_dim=7)).eval()
    _load_official(mdlm, sd)
    _load_official(imdm, sd)
    x, t = _inputs(3)
    eps = imdm.process.labels.draw(*x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(imdm(x, eps, t), mdlm(x, None, t))
        imdm.vocab_embed.imdm_mlp[2].weight.normal_()
        assert not torch.allclose(imdm(x, eps, t), mdlm(x, None, t))


def test_fresh_model_is_adaln_zero():
    model = DiT(DiTConfig(vocab_size=V, mask_id=MASK)).eval()
    x, t = _inputs(4)
    eps = model.process.labels.draw(*x.shape)
    h = torch.randn(x.shape[0], x.shape[1], DIMS.hidden)
    cos, sin = rotary_cos_sin(x.shape[1], DIMS.hidden // DIMS.heads, "cpu")
    c = torch.randn(x.shape[0], DIMS.cond)
    with torch.no_grad():
        assert torch.equal(model.blocks[0](h, cos, sin, c), h)  # zero gates: identity blocks
        assert torch.count_nonzero(model(x, eps, t)) == 0  # zero-initialised output layer


def test_rotary_scores_depend_only_on_the_offset():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    cos, sin = rotary_cos_sin(40, 16, "cpu")

    def score(i, j):
        return float((apply_rotary(q, cos[i:i + 1], sin[i:i + 1]) * apply_rotary(k, cos[j:j + 1], sin[j:j + 1])).sum())

    assert score(3, 7) == pytest.approx(score(30, 34), abs=1e-4)
    assert score(5, 5) == pytest.approx(float((q * k).sum()), abs=1e-5)
    assert score(3, 7) != pytest.approx(score(3, 9), abs=1e-3)


def test_qk_norm_and_dropout_options_train_through_the_elbo_kernel():
    model = DiT(DiTConfig(vocab_size=V, mask_id=MASK, qk_norm=True, dropout=0.1, labels="randn"))
    assert {"blocks.0.q_norm.weight", "blocks.0.k_norm.bias"} <= set(model.state_dict())
    x0 = torch.randint(0, V - 1, (4, 10), generator=torch.Generator().manual_seed(1))
    out = elbo(model, x0, torch.full((4,), 0.5), generator=torch.Generator().manual_seed(2))
    out.mean.backward()
    assert math.isfinite(float(out.mean.detach()))
    assert model.output_layer.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs,word", [({"size": "huge"}, "model.size"), ({"labels": "gauss"}, "model.labels"),
                                         ({"softcap": -1.0}, "model.softcap"),
                                         ({"local_bias": -0.5}, "model.local_bias"),
                                         ({"local_bias": float("nan")}, "model.local_bias"),
                                         ({"init": "xavier"}, "model.init"), ({"mask_id": V + 1}, "model.mask_id")])
def test_bad_model_config_names_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=f"^{word}"):
        DiTConfig(**{"vocab_size": V, "mask_id": MASK, **kwargs})


@pytest.mark.parametrize("kwargs,message", [
    ({"hidden": 48, "heads": 5}, "model.heads: expected a divisor of the hidden size 48"),
    ({"hidden": 36, "heads": 4}, "model.heads: the head dimension hidden / heads = 9 must be even"),
    ({"blocks": -1}, "model.blocks: expected an integer >= 1"),
    ({"cond": 2.5}, "model.cond: expected an integer >= 1"),
    ({"dropout": 1.0}, "model.dropout: expected a number in"),
])
def test_explicit_dims_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        DiTConfig(**{"vocab_size": V, "mask_id": MASK, **kwargs})


def test_explicit_dims_override_the_preset_from_a_config():
    from scale.checkpoints.config import load_config

    config = load_config("tiny-cpu", ["model.hidden=48", "model.blocks=3", "model.heads=6", "model.cond=20"])
    model = DiT(config.model.with_vocabulary(V, MASK))
    assert model.config.dims == type(DIMS)(hidden=48, blocks=3, heads=6, cond=20, dropout=DIMS.dropout)
    assert len(model.blocks) == 3 and model.vocab_embed.embedding.shape == (V, 48)
    assert model.sigma_map.mlp[2].weight.shape == (20, 20) and model.blocks[0].heads == 6
    assert model.vocab_embed.imdm_mlp[0].weight.shape == (4 * 48, 48)  # label_dim unset: the hidden size
    x, t = _inputs()
    eps = model.process.labels.draw(*x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model.eval()(x, eps, t).shape == (*x.shape, V)
    # only the given dims change: the rest stay the preset's
    partial = DiTConfig(vocab_size=V, mask_id=MASK, size="synthetic", blocks=1).dims
    assert (partial.hidden, partial.blocks, partial.heads, partial.cond) == (128, 1, 4, 128)


def test_local_bias_by_hand_and_off_by_default():
    from scale.model.dit import local_attention_bias
    b = local_attention_bias(3, 2, 1.0, torch.device("cpu"), torch.float32)
    assert b[0].tolist() == [[[0, -1, -2], [-1, 0, -1], [-2, -1, 0]], [[0, -.5, -1], [-.5, 0, -.5], [-1, -.5, 0]]]
    torch.manual_seed(0)
    plain = DiT(DiTConfig(vocab_size=V, mask_id=MASK, labels="none"))
    torch.manual_seed(0)
    zero = DiT(DiTConfig(vocab_size=V, mask_id=MASK, labels="none", local_bias=0.0))
    for a, b in zip(plain.state_dict().values(), zero.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_init_torch_keeps_pytorchs_default_linear_init():
    """init = "torch": the block and timestep-MLP weights keep nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (std 1/sqrt(3 fan_in)); init = "normal" draws them from N(0, 0.02). Gates and head start at zero in both."""
    d = 128
    for init, std in (("torch", 1 / math.sqrt(3 * d)), ("normal", 0.02)):
        torch.manual_seed(0)
        m = DiT(DiTConfig(vocab_size=V, mask_id=MASK, labels="none", size="synthetic", init=init))
        for w in (m.blocks[0].attn_qkv.weight, m.blocks[1].mlp[0].weight, m.sigma_map.mlp[2].weight):
            fan_in = w.shape[1]
            want = 1 / math.sqrt(3 * fan_in) if init == "torch" else std
            assert abs(float(w.detach().std()) / want - 1) < 0.05
            if init == "torch":
                assert float(w.detach().abs().max()) <= 1 / math.sqrt(fan_in)
        assert not m.blocks[0].adaLN_modulation.weight.any() and not m.output_layer.linear.weight.any()
