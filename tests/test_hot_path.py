"""The training step and the sampler step read nothing back from the device, and the DiT forward with
the chunked ELBO compiles as one graph.

A read-back is any Python-level conversion of a tensor to a host value: item(), bool / int / float
(an `if` on a tensor), tolist(). They are counted by patching those methods around the step."""
import contextlib
import functools
from collections import Counter

import pytest
import torch

from imdm_lab.labels import MaskLabels
from imdm_lab.losses import IGNORE, elbo, weighted_nll
from imdm_lab.masking import q_sample
from imdm_lab.process import Process
from imdm_lab.sampling import SamplerOptions, sample
from scale.checkpoints.config import config_from_dict
from scale.model.dit import DiT, DiTConfig
from scale.training.trainer import elbo_trainer

READ_BACKS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist")


@contextlib.contextmanager
def counting_read_backs():
    """Counter of read-backs (and of nonzero calls, which size their output from the data)."""
    seen = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in (*READ_BACKS, "nonzero")}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            seen[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    for name, fn in originals.items():
        setattr(torch.Tensor, name, counted(name, fn))
    try:
        yield seen
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def test_the_counter_sees_read_backs():
    x = torch.arange(4)
    with counting_read_backs() as seen:
        if x.max() > 2:
            int(x.sum()), float(x[0]), x.tolist(), x.nonzero()
    assert seen["__bool__"] == 1 and seen["__int__"] == 1 and seen["__float__"] == 1
    assert seen["tolist"] == 1 and seen["nonzero"] == 1


def _trainer(tmp_path, loss="chunked"):
    config = config_from_dict({
        "model": {"size": "tiny-cpu", "labels": "rand", "vocab_size": 40, "mask_id": 40},
        "train": {"global_batch": 4, "micro_batch": 2, "warmup": 2, "loss": loss, "ema": 0.9,
                  # the optimizer the trainer builds on CUDA (CPU PyTorch has the fused kernel as well)
                  "optimizer_impl": "fused"},
        "eval": {"every": 0}})
    blocks = torch.randint(0, 40, (8, 16), generator=torch.Generator().manual_seed(0))
    trainer = elbo_trainer(config, tmp_path / "run", blocks, blocks[:2])
    return trainer


@pytest.mark.parametrize("kind", ["chunked", "chunked-all"])
def test_a_training_step_reads_nothing_back(tmp_path, kind):
    trainer = _trainer(tmp_path, kind)
    trainer.update()  # the first step creates the optimizer state
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with counting_read_backs() as seen:
        loss, grad_norm, _ = trainer.update()
    assert {k: seen[k] for k in READ_BACKS} == dict.fromkeys(READ_BACKS, 0), seen
    # "chunked" selects the masked rows for the head, once forward and once backward per micro-batch
    # (2 micro-batches here); "chunked-all" runs it on every row and selects nothing
    assert seen["nonzero"] == {"chunked": 2 * trainer.plan.accumulation, "chunked-all": 0}[kind]
    assert torch.isfinite(loss) and float(grad_norm) > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=False))


def test_the_trainer_checks_its_data_on_the_host(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.loss.blocks = torch.full((8, 16), 40)  # the mask id is not a class here
    with pytest.raises(ValueError, match=r"^data: expected token ids in \[0, 40\)"):
        trainer.update()
    with pytest.raises(ValueError, match="^train.loss:"):
        _trainer(tmp_path, loss="fused")


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("seeds", [None, torch.arange(4)])  # labels from the generator / hashed seeds
def test_a_sampler_step_reads_nothing_back(seeds, dense):
    """Steps after the first network call (which checks the ids of `given` once), resets included; the
    dense mode selects no rows either (no nonzero)."""
    V, L, mask = 12, 10, 3
    process = Process(mask_id=3, labels=MaskLabels("rand", dim=2))
    weights = torch.randn(V, V, generator=torch.Generator().manual_seed(0))
    calls, counters = [], []
    stack = contextlib.ExitStack()

    def denoiser(x, eps, t):
        calls.append(1)
        if len(calls) == 2:
            counters.append(stack.enter_context(counting_read_backs()))
        return weights[x] + eps.sum(-1, keepdim=True)
    given = torch.full((4, L), mask)
    given[:, 0] = 5
    with stack:
        out = sample(denoiser, batch_size=4, length=L, steps=6, process=process, given=given,
                     seeds=seeds, generator=torch.Generator().manual_seed(1),
                     options=SamplerOptions(cache=False, dense=dense))
    assert len(calls) >= 3 and out.nfe == len(calls) and (out.tokens != mask).all()
    assert not torch.equal(out.eps_init, out.eps_final)  # labels were reset on the way
    (seen,) = counters
    assert {k: seen[k] for k in READ_BACKS} == dict.fromkeys(READ_BACKS, 0), seen
    if dense:
        assert len(calls) == 6 and seen["nonzero"] == 0


@pytest.mark.parametrize("head_rows", ["masked", "all"])
@pytest.mark.parametrize("labels", ["rand", "none"])
def test_dit_forward_with_the_chunked_elbo_has_no_graph_break(labels, head_rows):
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=50, mask_id=50, labels=labels, dropout=0.0))
    x0 = torch.randint(0, 50, (2, 16))
    t = torch.tensor([0.3, 0.8])
    x_t, masked = q_sample(x0, t, "loglinear", 50, generator=torch.Generator().manual_seed(0))
    eps = model.process.draw_labels(2, 16)

    def loss(x_t, eps, t, targets, masked):
        nll = model(x_t, eps, t, targets=targets, validate=False, head_rows=head_rows)
        return weighted_nll(nll, masked, t, "loglinear").mean()
    torch._dynamo.reset()
    report = torch._dynamo.explain(loss)(x_t, eps, t, torch.where(masked, x0, IGNORE), masked)
    torch._dynamo.reset()
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons


def test_rotary_tables_are_built_once_per_length_device_and_dtype():
    from scale.model.dit import rotary_cos_sin, rotary_tables
    model = DiT(DiTConfig(vocab_size=50, mask_id=50, labels="none", dropout=0.0))
    x = torch.randint(0, 50, (2, 24))
    model(x, None, torch.ones(2))
    misses = rotary_tables.cache_info().misses
    model(x, None, torch.ones(2))
    assert rotary_tables.cache_info().misses == misses  # the second forward reuses the tables
    head_dim = model.config.dims.hidden // model.config.dims.heads
    cos, sin = rotary_tables(24, head_dim, x.device, torch.float32)
    assert cos is rotary_tables(24, head_dim, x.device, torch.float32)[0]
    assert all(torch.equal(a, b) for a, b in zip((cos, sin), rotary_cos_sin(24, head_dim, x.device), strict=False))
    assert rotary_tables(24, head_dim, x.device, torch.float64)[0].dtype == torch.float64


@pytest.mark.parametrize("revalidate", [True, False])
def test_a_dense_dit_sampler_step_reads_nothing_back_once_told_the_ids_are_checked(revalidate):
    """The DiT checks the id range of x_t at each plain call (min and max: two reads); with
    revalidate=False the sampler passes validate=False after its own check at the first call."""
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=20, mask_id=20, labels="rand", label_dim=4, dropout=0.0)).eval()
    calls, counters = [], []
    stack = contextlib.ExitStack()

    def denoiser(x, eps, t, **kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            counters.append(stack.enter_context(counting_read_backs()))
        return model(x, eps, t, **kwargs)
    given = torch.full((3, 12), 20)
    given[:, :2] = 7
    with stack:
        out = sample(denoiser, batch_size=3, length=12, steps=4, process=model.process, given=given,
                     seeds=torch.arange(3), options=SamplerOptions(dense=True, revalidate=revalidate))
    assert out.nfe == len(calls) == 4 and (out.tokens < 20).all() and calls[0] == {}
    (seen,) = counters
    assert seen["nonzero"] == 0 and seen["__bool__"] == seen["item"] == seen["tolist"] == 0
    assert seen["__int__"] == (2 * 3 if revalidate else 0)  # calls 2-4
    assert all(kw == ({} if revalidate else {"validate": False}) for kw in calls[1:])
    with pytest.raises(ValueError, match="^revalidate:"):
        sample(denoiser, batch_size=3, length=12, steps=4, process=model.process,
               options=SamplerOptions(revalidate=None))


@pytest.mark.parametrize("efficient", [False, True])
def test_a_trusted_elbo_on_the_dit_reads_nothing_back_and_a_checked_one_does(efficient):
    """validate=False: neither the kernel nor the DiT (told validate=False) reads a tensor back, on the
    full-logits path and on the chunked one over all rows (the masked-rows chunking selects its rows with
    one sync by design); validate=True checks x0, t and the ids of x_t (reads)."""
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=20, mask_id=20, labels="rand", label_dim=4, dropout=0.0))
    x0 = torch.randint(0, 20, (4, 16), generator=torch.Generator().manual_seed(1))
    counts = {}
    for validate in (True, False):
        with counting_read_backs() as seen:
            den = functools.partial(model, head_rows="all") if efficient else model
            out = elbo(den, x0, torch.full((4,), 0.5), process=model.process,
                       generator=torch.Generator().manual_seed(2), efficient=efficient, validate=validate)
        counts[validate] = sum(seen[k] for k in READ_BACKS) + seen["nonzero"]
        assert torch.isfinite(out.mean)
    assert counts[False] == 0 and counts[True] > 0, counts
