"""The kernels on a GPU: bit-identical seeded labels across devices and the exact k-step law on CUDA.

Skipped where no CUDA device is present (the CPU tests cover the same kernels)."""
import pytest
import torch
from test_kernels_oracle import ALPHA, N

from imdm_lab import exact
from imdm_lab.embedding import MaskEmbedding
from imdm_lab.labels import MaskLabels
from imdm_lab.masking import q_sample
from imdm_lab.process import Process
from imdm_lab.sampling import SamplerOptions, sample
from imdm_lab.testing import chi_square_pvalue
from toy_tasks.distributions import make_task
from toy_tasks.oracle import make_oracle

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("labels", [MaskLabels("rand", dim=7, scale=2.0), MaskLabels("randn", dim=3),
                                   MaskLabels("finite", K=5)], ids=lambda n: n.kind)
def test_seeded_labels_are_identical_on_cpu_and_gpu(labels):
    seeds = torch.tensor([0, -5, 2**40 + 3, 77])
    cpu = labels.from_seeds(seeds, 33, stream=2, dtype=torch.float64)
    gpu = labels.from_seeds(seeds.cuda(), 33, stream=2, dtype=torch.float64).cpu()
    if labels.kind == "randn":
        # the hashed uniforms are bit-identical; log / cos of Box-Muller may differ in the last ulp
        assert torch.allclose(cpu, gpu, rtol=1e-13, atol=1e-13)
    else:
        assert torch.equal(cpu, gpu)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_oracle_sampler_on_cuda_has_the_exact_law(steps):
    p = make_task("markov", V=3, L=3, seed=1).probs
    g = torch.Generator(device="cuda").manual_seed(steps)
    out = sample(make_oracle("oracle-mdm", p, schedule="loglinear"), batch_size=N, length=3, steps=steps,
                 generator=g, device="cuda")
    assert out.tokens.device.type == "cuda"
    assert chi_square_pvalue(out.tokens.cpu(), exact.mdm_law(p, steps, "loglinear")) > ALPHA


def test_imdm_sampling_with_seeds_and_resets_on_cuda():
    labels = MaskLabels("rand", dim=4)
    V, B, L = 50, 2, 4
    emb = MaskEmbedding(V + 1, 8, V, labels=labels).cuda()
    torch.nn.init.normal_(emb.imdm_mlp[2].weight)
    head = torch.nn.Linear(8, V).cuda()

    def den(x, eps, t):
        return head(emb(x, eps))
    seeds = torch.arange(B, device="cuda")
    kw = dict(batch_size=B, length=L, steps=64, process=Process(V, "loglinear", labels), seeds=seeds,
              device="cuda")
    a = sample(den, generator=torch.Generator(device="cuda").manual_seed(0), **kw)
    b = sample(den, generator=torch.Generator(device="cuda").manual_seed(0), options=SamplerOptions(cache=False), **kw)
    assert torch.equal(a.tokens, b.tokens) and a.nfe < b.nfe
    assert torch.equal(a.eps_init.cpu(), labels.from_seeds(seeds.cpu(), L))
    x0 = a.tokens
    xt, masked = q_sample(x0, torch.full((B,), 0.5, device="cuda"), "linear", V,
                          generator=torch.Generator(device="cuda").manual_seed(1))
    assert xt.device.type == "cuda" and torch.equal(xt == V, masked)
