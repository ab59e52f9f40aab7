"""Label-space slices against the partition-and-map oracle, whose map is known in closed form on align."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imdm_lab.labels import MaskLabels
from toy_tasks.distributions import make_task
from toy_tasks.label_slices import label_slice, one_step_modes, support_index
from toy_tasks.oracle import OracleIMDM, OracleMDM

V, L = 4, 3


def _base(labels):
    return labels.draw(1, L, generator=torch.Generator().manual_seed(0))[0]


def test_slice_varies_exactly_the_two_chosen_entries_on_cell_midpoints():
    labels = MaskLabels("rand", dim=2, scale=0.5)
    base = _base(labels)
    eps, (a, b) = label_slice(labels, L, ((0, 1), (2, 0)), n=4, base=base)
    assert eps.shape == (16, L, 2)
    assert np.allclose(a, [-0.375, -0.125, 0.125, 0.375]) and np.allclose(a, b)
    grid = eps.view(4, 4, L, 2)
    assert torch.allclose(grid[:, 0, 0, 1].double(), torch.tensor(a))  # first axis varies along rows
    assert torch.allclose(grid[0, :, 2, 0].double(), torch.tensor(b))  # second axis along columns
    fixed = torch.ones(L, 2, dtype=torch.bool)
    fixed[0, 1] = fixed[2, 0] = False
    assert torch.equal(eps[:, fixed], base[fixed].expand(16, -1))


def test_partition_and_map_oracle_cuts_the_slice_into_V_bands_of_its_read_coordinate():
    # The oracle reads u = (eps[position 0, coordinate 0] + 1) / 2 and outputs the constant sequence
    # floor(u V): V vertical bands of equal width, whatever the other coordinate.
    p = make_task("align", V=V, L=L).probs
    labels = MaskLabels("rand", dim=2)
    n = 8
    eps, (a, _) = label_slice(labels, L, ((0, 0), (1, 0)), n=n, base=_base(labels))
    seqs, logp = one_step_modes(OracleIMDM(p, labels), eps, mask_id=V, chunk=5)
    assert torch.equal(logp, torch.zeros(n * n, dtype=torch.float64))  # a deterministic one-step output
    seqs = seqs.numpy()
    ids = support_index(seqs, np.repeat(np.arange(V)[:, None], L, axis=1)).reshape(n, n)
    expected = np.floor((a + 1) / 2 * V).astype(int)
    assert np.array_equal(ids, np.repeat(expected[:, None], n, axis=1))


def test_a_denoiser_without_labels_outputs_no_likely_sequence_and_off_support_rows_get_minus_one():
    p = make_task("align", V=V, L=L).probs
    labels = MaskLabels("randn", dim=3)
    eps, _ = label_slice(labels, L, ((0, 0), (0, 1)), n=3, base=_base(labels))
    seqs, logp = one_step_modes(OracleMDM(p), eps, mask_id=V)  # uniform marginals: argmax is token 0
    assert torch.equal(seqs, torch.zeros(9, L, dtype=torch.int64))
    assert torch.allclose(logp, torch.full((9,), -L * np.log(V), dtype=torch.float64))  # (1/V)^L
    support = np.array([[0, 0, 0], [1, 1, 1]])
    assert support_index(np.array([[1, 1, 1], [0, 1, 0], [0, 0, 0]]), support).tolist() == [1, -1, 0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=MaskLabels("finite", K=4)), "^labels: expected continuous labels"),
    (dict(n=1), "^n: expected an integer >= 2"),
    (dict(axes=((0, 0), (3, 0))), "^axes: expected positions in"),
    (dict(axes=((0, 0), (0, 0))), "^axes: expected two different entries"),
    (dict(axes=(0, 0)), "^axes: expected two"),
])
def test_bad_input_names_the_argument(kwargs, message):
    labels = MaskLabels("rand", dim=2)
    args = dict(labels=labels, length=L, axes=((0, 0), (1, 0)), n=4, base=_base(labels)) | kwargs
    with pytest.raises(ValueError, match=message):
        label_slice(**args)


def test_oracle_imdm_refuses_sequences_of_another_length():
    labels = MaskLabels("rand", dim=1)
    oracle = OracleIMDM(make_task("align", V=3, L=3).probs, labels)
    with pytest.raises(ValueError, match=r"^x_t: expected a Long\[B, 3\] tensor"):
        oracle(torch.full((2, 5), 3), labels.draw(2, 5), torch.ones(2))
