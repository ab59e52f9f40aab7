"""The IMDM mask embedding: official parameter names, fresh IMDM == MDLM, finite K = 1 == MDLM."""
import math

import pytest
import torch

from imdm_lab.embedding import EPS_PATHS, MaskEmbedding, path_of
from imdm_lab.labels import MaskLabels

V, D, d = 11, 6, 8
MASK = V - 1


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (3, 9), generator=g)
    x[:, ::2] = MASK
    return x


def _mdlm_twin(emb: MaskEmbedding) -> MaskEmbedding:
    twin = MaskEmbedding(V, d, MASK)  # no labels: MDLM's embedding
    twin.load_state_dict({"embedding": emb.embedding.detach().clone()})
    return twin


@pytest.mark.parametrize("kind", ["rand", "randn", "learnable"])
def test_fresh_imdm_equals_mdlm_and_names_match(kind):
    torch.manual_seed(0)
    labels = MaskLabels(kind, dim=D)
    emb = MaskEmbedding(V, d, MASK, labels=labels)
    assert emb.labels is labels and path_of(labels) == "mlp"
    names = {n for n, _ in emb.named_parameters()}
    expected = {"embedding", "imdm_mlp.0.weight", "imdm_mlp.0.bias", "imdm_mlp.2.weight"}
    if kind == "learnable":
        expected |= {"learnable_noise_mu", "learnable_noise_sigma"}
    assert names == expected
    assert emb.imdm_mlp[2].bias is None and emb.eps_mlp_norm() == 0.0
    assert emb.imdm_mlp[0].weight.abs().max() <= 0.04
    x = _batch()
    eps = labels.draw(3, 9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(emb(x, eps), _mdlm_twin(emb)(x))


def test_mdlm_weights_load_unchanged_with_strict_false():
    torch.manual_seed(1)
    mdlm = MaskEmbedding(V, d, MASK)
    imdm = MaskEmbedding(V, d, MASK, labels=MaskLabels("rand", dim=D))
    missing, unexpected = imdm.load_state_dict(mdlm.state_dict(), strict=False)
    assert set(missing) == {"imdm_mlp.0.weight", "imdm_mlp.0.bias", "imdm_mlp.2.weight"} and not unexpected
    x = _batch()
    assert torch.equal(imdm(x, torch.rand(3, 9, D)), mdlm(x))


def test_trained_eps_path_changes_only_masked_positions():
    torch.manual_seed(2)
    labels = MaskLabels("rand", dim=D)
    emb = MaskEmbedding(V, d, MASK, labels=labels)
    torch.nn.init.normal_(emb.imdm_mlp[2].weight)
    assert emb.eps_mlp_norm() > 0
    x = _batch()
    out, ref = emb(x, labels.draw(3, 9)), _mdlm_twin(emb)(x)
    visible = x != MASK
    assert torch.equal(out[visible], ref[visible])
    assert not torch.allclose(out[~visible], ref[~visible])


def test_finite_k1_is_frozen_mdlm_and_k_table_is_zero_init():
    torch.manual_seed(3)
    x = _batch()
    one = MaskEmbedding(V, d, MASK, labels=MaskLabels("finite", K=1))  # finite labels: the K-state table
    assert path_of(one.labels) == "table" and {n for n, _ in one.named_parameters()} == {"embedding", "mask_table"}
    assert not one.mask_table.requires_grad and tuple(one.mask_table.shape) == (1, d)
    assert torch.equal(one(x, torch.zeros(3, 9, dtype=torch.long)), _mdlm_twin(one)(x))
    many = MaskEmbedding(V, d, MASK, labels=MaskLabels("finite", K=4))
    assert many.mask_table.requires_grad and many.eps_mlp_norm() == 0.0
    eps = MaskLabels("finite", K=4).draw(3, 9)
    assert torch.equal(many(x, eps), _mdlm_twin(many)(x))


def test_embedding_init_is_kaiming_uniform():
    torch.manual_seed(4)
    emb = MaskEmbedding(2000, 64, 0)
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=sqrt(5)) on fan_in = d
    w = emb.embedding.detach()
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound


def test_without_labels_there_is_no_eps_path():
    # an MDM: the embedding table alone, eps neither needed nor read
    torch.manual_seed(5)
    emb = MaskEmbedding(V, d, MASK)
    assert emb.labels is None and path_of(None) == "none" and EPS_PATHS["none"] == (None, None, None)
    assert {n for n, _ in emb.named_parameters()} == {"embedding"} and emb.eps_mlp_norm() == 0.0
    x = _batch()
    assert torch.equal(emb(x), emb.embedding.detach()[x])
    assert torch.equal(emb(x, torch.rand(3, 9, D)), emb(x))
    assert set(EPS_PATHS) == {"mlp", "table", "none"}


def test_bad_embedding_arguments():
    labels = MaskLabels("rand", dim=D)
    with pytest.raises(ValueError, match="^labels:"):
        MaskEmbedding(V, d, MASK, labels="rand")
    with pytest.raises(ValueError, match="^mask_id:"):
        MaskEmbedding(V, d, V, labels=labels)
    emb = MaskEmbedding(V, d, MASK, labels=labels)
    with pytest.raises(ValueError, match="^eps:"):
        emb(_batch(), torch.zeros(3, 9, D + 1))
    with pytest.raises(ValueError, match="^eps:"):
        emb(_batch(), None)
    table = MaskEmbedding(V, d, MASK, labels=MaskLabels("finite", K=4))
    with pytest.raises(ValueError, match="^eps: expected a long tensor"):  # the table reads finite labels only
        table(_batch(), torch.zeros(3, 9))
    with pytest.raises(ValueError, match="^x_t:"):
        emb(torch.full((2, 2), V), torch.zeros(2, 2, D))
