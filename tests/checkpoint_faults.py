"""Fault injection (tests/fault_injection.py) into checkpoint commits: the process ends abruptly at the
n-th file-system step of scale.checkpoints.checkpoint.RunFolder.commit for one step; with `torn`, a file
being fsynced is first cut to half its length.

    python tests/checkpoint_faults.py N STEP [torn] -- ARGV...   `python -m scale ARGV` with the fault
        armed in rank 0 (torchrun launches this file for the DDP test)
    python tests/checkpoint_faults.py sweep DIR                  every step of one commit, one process
        each (forked), each killed run resumed; prints one JSON line per case (n = 0: killed half-way
        through the metrics.jsonl record written just before that commit)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fault_injection import KILLED, NOT_A_WRITE, Faults  # noqa: E402  (this folder: the script's own)

from imdm_lab.durable import writer_of  # noqa: E402


def arm(n: int, step: int, torn: bool = False) -> None:
    """End this process at the n-th file-system call (1-based) of the commit of `step`."""
    from scale.checkpoints.checkpoint import RunFolder
    faults = Faults(n, torn).install()
    commit = RunFolder.commit

    def armed_commit(self, model_state, ema_state, optimizer_state, state):
        if state["step"] != step:
            return commit(self, model_state, ema_state, optimizer_state, state)
        with faults.armed():
            return commit(self, model_state, ema_state, optimizer_state, state)
    RunFolder.commit = armed_commit


def arm_log(step: int) -> None:
    """End this process half-way through appending the metrics.jsonl record of `step`."""
    from scale.training.trainer import Trainer

    def torn_log(self, record):
        if record.get("step") == step and "loss" in record:
            with open(self.out / "metrics.jsonl", "a") as f:
                line = json.dumps(record) + "\n"
                f.write(line[:len(line) // 2])
            os._exit(KILLED)
        log(self, record)
    log = Trainer._log
    Trainer._log = torn_log


# ---- the single-process sweep ------------------------------------------------------------------------
MAX_STEPS, TARGET = 4, 3  # checkpoints at every step; the commit of step 3 also prunes step 1 (KEEP = 2)


def _train(out: Path, resume: bool) -> None:
    """A tiny DiT on random blocks: 4 steps of 2 accumulated micro-batches, a checkpoint every step."""
    import torch

    from scale.checkpoints.checkpoint import find_checkpoint
    from scale.checkpoints.config import load_config
    from scale.training.trainer import elbo_trainer
    config = load_config("tiny-cpu", ["train.global_batch=8", "train.micro_batch=4", "train.checkpoint_every=1",
                                      "train.log_every=1", "eval.every=0", "data.length=16",
                                      "model.vocab_size=40", "model.mask_id=39"])
    blocks = torch.randint(0, 39, (64, 16), generator=torch.Generator().manual_seed(0))
    trainer = elbo_trainer(config, out, blocks, blocks[:8])
    start = None
    if resume and find_checkpoint(out) is not None:
        trainer.resume()
        start = trainer.step
    (out.parent / f"{out.name}.resumed").write_text(json.dumps(start))
    trainer.run(MAX_STEPS)


def _child(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        except BaseException as err:  # report, never return into the parent's code
            print(f"child failed: {type(err).__name__}: {err}", file=sys.stderr)
            os._exit(1)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _killed_run(out: Path, n: int, torn: bool) -> None:
    if n == 0:
        arm_log(TARGET)
    else:
        arm(n, TARGET, torn)
    _train(out, resume=False)


def _tensors(run: Path) -> dict:
    from safetensors.numpy import load_file

    from scale.checkpoints.checkpoint import find_checkpoint
    folder = find_checkpoint(run)
    return {name: load_file(folder / name) for name in ("model.safetensors", "ema.safetensors")}


def _records(run: Path) -> list[dict]:
    """metrics.jsonl without the timings."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    from scale.training.trainer import WALL_CLOCK_KEYS
    return [{k: v for k, v in json.loads(ln).items() if k not in WALL_CLOCK_KEYS} for ln in lines]


def _leftovers(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if writer_of(p) is not None)


def sweep(folder: Path) -> None:
    """The reference run happens here (imports and first calls once, one thread so that forking is
    safe); the forked children train from the killed runs on."""
    import numpy as np
    import torch
    torch.set_num_threads(1)
    ref = folder / "reference"
    _train(ref, False)
    want, records = _tensors(ref), _records(ref)
    cases = [(0, False)] + [(n, False) for n in range(1, 64)] + [(n, True) for n in range(1, 64)]
    last = {False: None, True: None}
    for n, torn in cases:
        if last[torn] is not None and n > last[torn]:
            continue
        run = folder / f"run-{n}{'-torn' if torn else ''}"
        code = _child(_killed_run, run, n, torn)
        if code == 0:  # the commit made fewer than n calls: every call has been a kill point
            last[torn] = n
            continue
        if code == NOT_A_WRITE:
            shutil.rmtree(run)
            continue
        assert code == KILLED, code
        resumed = _child(_train, run, True)
        got = _tensors(run) if resumed == 0 else {}
        same = resumed == 0 and all(
            got[f].keys() == want[f].keys() and all(np.array_equal(got[f][k], want[f][k]) and
                                                    got[f][k].dtype == want[f][k].dtype for k in want[f])
            for f in want)
        steps = sorted(p.name for p in (run / "checkpoints").iterdir())
        print(json.dumps({"n": n, "torn": torn, "resume_exit": resumed, "bit_identical": same,
                          "resumed_from": json.loads((folder / f"{run.name}.resumed").read_text()),
                          "same_metrics": resumed == 0 and _records(run) == records,
                          "leftovers": _leftovers(run), "checkpoints": steps}), flush=True)
        shutil.rmtree(run)


if __name__ == "__main__":
    if sys.argv[1] == "sweep":
        sweep(Path(sys.argv[2]))
    else:
        split = sys.argv.index("--")
        n, step, *flags = sys.argv[1:split]
        if int(os.environ.get("RANK", "0")) == 0:
            arm(int(n), int(step), torn="torn" in flags)
        from scale.cli import main
        sys.exit(main(sys.argv[split + 1:]))
