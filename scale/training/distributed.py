"""torch.distributed set-up for `torchrun`: process group, device, DDP / FSDP wrapping, reductions.

A run launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) joins the process group
(nccl on GPUs, gloo on CPUs); anything else is a single process with world size 1. Multi-node runs use
torchrun's own rendezvous; nothing here is specific to one node.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_runtime() -> Runtime:
    """Join torchrun's process group if there is one; pick cuda:LOCAL_RANK when CUDA exists, else the CPU."""
    if not launched_by_torchrun():
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Runtime(0, 1, 0, device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=(
            device if device.type == "cuda" else None))
    return Runtime(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (the tensor itself when single-process)."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


STRATEGIES = ("ddp", "fsdp")


def wrap(model: torch.nn.Module, runtime: Runtime, strategy: str) -> torch.nn.Module:
    """DDP (replicated weights, all-reduced gradients) or FSDP2 (`fully_shard` per block and at the root)
    for world size > 1; the bare model otherwise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"train.strategy: expected one of {list(STRATEGIES)}, got {strategy!r}")
    if runtime.world == 1:
        return model
    if strategy == "ddp":
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(runtime: Runtime, strategy: str) -> bool:
    return strategy == "fsdp" and runtime.world > 1


# Replicated weights (one process, DDP) are saved and loaded with the plain state dicts of the bare
# model and optimizer; FSDP-sharded ones go through torch.distributed.checkpoint's full-state helpers,
# which gather to (and scatter from) unsharded CPU tensors under the same names.
def full_state(model: torch.nn.Module, optimizer, sharded: bool) -> tuple[dict, dict]:
    """(model state, optimizer state), unsharded, under the bare module's parameter names."""
    if not sharded:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)


def load_full_model_state(model: torch.nn.Module, model_state: dict, sharded: bool) -> None:
    """Full CPU weights into a bare, DDP-shared or FSDP-sharded model (every process passes the same)."""
    if not sharded:
        model.load_state_dict(model_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(model, model_state, options=StateDictOptions(full_state_dict=True, strict=True))


def load_full_state(model, optimizer, model_state: dict, optimizer_state: dict, sharded: bool) -> None:
    """Inverse of full_state (every process passes the same full dicts)."""
    load_full_model_state(model, model_state, sharded)
    if not sharded:
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, optimizer_state,
                             options=StateDictOptions(full_state_dict=True, strict=True))
