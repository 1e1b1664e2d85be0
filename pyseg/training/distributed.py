"""Distributed data parallel helpers (torchrun environment; gloo on CPU, nccl on CUDA).

Launch: ``torchrun --nproc_per_node=N -m pyseg.train --config FILE``. torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them everything here is a no-op single process.
Training uses ``DistributedSampler`` (pads to equal shards); evaluation uses :class:`ShardSampler`
(no padding, so every validation image counts exactly once) and sums the confusion matrices.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank info from the torchrun environment variables (single process when they are absent)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local = int(os.environ.get("LOCAL_RANK", rank))
        except ValueError as e:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {e}") from None
        return DistInfo(rank, world, local, world > 1)
    return DistInfo()


def init_distributed(backend: str = "auto", device_type: str = "cpu") -> DistInfo:
    """Initialise the default process group from the environment when WORLD_SIZE > 1."""
    info = env_dist_info()
    if not info.enabled:
        return info
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank, True)
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    # torch._dynamo (imported by torchvision) holds the default group if imported after it exists: then
    # destroy_process_group cannot join gloo's threads, which may abort the process at exit.
    import torch._dynamo  # noqa: F401
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    log.info("distributed: rank %d / %d, backend %s", info.rank, info.world_size, backend)
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_dist():
        dist.barrier()


class ShardSampler(torch.utils.data.Sampler):
    """Indices ``rank, rank + world, ...`` of a dataset: disjoint shards, no padding, no shuffling."""

    def __init__(self, dataset, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.n = len(dataset)
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(n)``: blocks in rank order concatenate to ``range(n)`` (so
    per-rank outputs join in dataset order); sizes differ by at most one; ranks beyond ``n`` get an empty one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without a process group)."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values, device) -> list[float]:
    """Sum a list of floats over ranks (float64); identity without a process group."""
    if not is_dist():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (identity without a process group)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running stats) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step every rank holds
    its own running statistics; evaluating with them would make the ranks (and the saved checkpoint)
    disagree. Call before evaluation.
    """
    if not is_dist():
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)


def maybe_sync_batchnorm(model: torch.nn.Module, enabled: bool, device_type: str = "cuda") -> torch.nn.Module:
    """Convert BatchNorm layers to SyncBatchNorm when ``enabled`` and running distributed on CUDA.

    torch's SyncBatchNorm works only on GPU modules; on CPU the layers stay BatchNorm (with a warning).
    """
    if enabled and is_dist() and device_type != "cuda":
        log.warning("model.sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on %s", device_type)
        return model
    if enabled and is_dist():
        log.info("converting BatchNorm layers to SyncBatchNorm")
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
