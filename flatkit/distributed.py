"""Several processes: ``torchrun --nproc-per-node N flatkit ...`` (docs/scale.md).

A command launched by ``torchrun`` (``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK`` in the environment) joins
the process group (:func:`init`: gloo on the CPU; with CUDA ``cpu:gloo,cuda:nccl`` and device
``cuda:LOCAL_RANK``), checks that every rank was given the same configuration (:func:`check_agreement`),
shares its work out with the helpers below, and lets rank 0 alone write results and draw progress bars.

How each analysis shards (every piece of work is computed by the same deterministic code as in one process, so
the numbers equal a one-process run):

- landscape grids: fixed blocks of grid points dealt round-robin to the ranks, gathered after every round
  (float64 values, bit for bit the one-process grid); perturb: the random directions and the worst-case radii;
- Hessian-vector products: the micro-batches of the frozen bank, summed in float64 by an all-reduce; every rank
  then runs the same Lanczos / Hutch++ / SLQ in lockstep on the same operator;
- sampling: whole batches of sample indices (each sample has its own generator);
- training: DDP, each rank a slice of the global batch (see :class:`TrainSharding`).

In one process (no ``torchrun``) every helper is a no-op that returns its input: no cost, no import of
``torch.distributed`` state.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from flatkit.errors import FlatkitError, UsageError

T = TypeVar("T")

_OWNED = {"group": False}  # whether this module created the process group (and so destroys it at exit)


# ----------------------------------------------------------------------------------------------- environment
def launched() -> bool:
    """True when this process was started by torchrun (or an equivalent launcher) with more than one rank."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in one process)."""
    if not active():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def world() -> int:
    """The number of ranks (1 in one process)."""
    if not active():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes results and prints progress."""
    return rank() == 0


def init(timeout_s: float = 1800.0) -> bool:
    """Join the process group when launched by torchrun; idempotent. Returns whether it is distributed.

    Backend: gloo on a CPU-only machine; with CUDA ``cpu:gloo,cuda:nccl`` (NCCL for the tensors on the GPU,
    gloo for the CPU tensors and the pickled objects) and the current device set to ``cuda:LOCAL_RANK``, so
    ``--device auto`` / ``cuda`` puts each rank on its own GPU. The group is destroyed at exit.
    """
    if not launched():
        return False
    import torch.distributed as dist

    if not dist.is_available():
        raise FlatkitError("torchrun: this torch build has no torch.distributed")
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_s))
    _OWNED["group"] = True
    atexit.register(destroy)
    return dist.get_world_size() > 1


def destroy() -> None:
    """Leave the process group this module created (at exit; safe to call twice)."""
    import torch.distributed as dist

    if _OWNED["group"] and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _OWNED["group"] = False


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------------------------- sharding
def shard(items: Sequence[T] | range) -> list[T]:
    """This rank's share of ``items``, dealt round-robin (item i goes to rank i mod world)."""
    items = list(items)
    w = world()
    return items if w == 1 else items[rank()::w]


def batch_shard(n: int, batch_size: int) -> list[int]:
    """The indices of the whole batches ``[b·B, (b+1)·B)`` dealt round-robin to this rank.

    Each batch keeps the composition it has in one process, so batched kernels see the same inputs.
    """
    starts = shard(range(0, n, batch_size))
    return [i for s in starts for i in range(s, min(n, s + batch_size))]


# ----------------------------------------------------------------------------------------------- collectives
def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order), None on the other ranks; ``[obj]`` in one process."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (the argument is ignored elsewhere)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ over ranks of ``t``, in place (the caller accumulates in float64 where it sums float64)."""
    if active():
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def run_on_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed by rank 0 alone and handed to every rank; a flatkit error raised there is raised on
    every rank (same message and exit code), so no rank is left waiting in a collective."""
    if not active():
        return fn()
    payload: Any = None
    if is_main():
        try:
            payload = ("ok", fn())
        except FlatkitError as e:
            payload = ("error", type(e).__name__, str(e), e.exit_code)
    payload = broadcast_object(payload)
    if payload[0] == "ok":
        return payload[1]
    _, _, msg, code = payload
    err = UsageError(msg) if code == 2 else FlatkitError(msg)
    raise err


# ----------------------------------------------------------------------------------------------- agreement
def check_agreement(config: dict, what: str, options: bool = True) -> None:
    """Refuse, on every rank, a configuration that differs between ranks: one line naming the first rank that
    differs from rank 0 and the settings that differ (:class:`UsageError`, exit 2). ``options``: the keys are
    command-line options (shown as ``--name``)."""
    if not active():
        return
    from flatkit.config import config_hash
    from flatkit.results import jsonable

    mine = jsonable(config)
    h = config_hash(mine)
    hashes = all_gather_objects(h)
    if all(x == hashes[0] for x in hashes):
        return
    configs = all_gather_objects(mine)
    r = next(i for i, x in enumerate(hashes) if x != hashes[0])
    a, b = configs[0], configs[r]
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        name = _opt if options else str
        diff = "; ".join(f"{name(k)} {b.get(k)!r} on rank {r}, {a.get(k)!r} on rank 0" for k in keys[:4])
        if len(keys) > 4:
            diff += f"; and {len(keys) - 4} more"
    else:
        diff = f"hash {hashes[r]} on rank {r}, {hashes[0]} on rank 0"
    raise UsageError(f"{what}: the ranks disagree on the configuration ({diff}); launch every rank with the "
                     "same arguments and files")


def _opt(key: str) -> str:
    return "--" + str(key).replace("_", "-")


def setup_command(name: str, params: dict) -> bool:
    """At the top of a command that shards its work: join the process group when launched by torchrun and
    check that every rank got the same options. Returns whether the command runs distributed."""
    if not init():
        return False
    check_agreement(dict(params), "torchrun")
    return True


# ----------------------------------------------------------------------------------------------- training (DDP)
class TrainSharding:
    """DDP for the trainer: every rank draws the same global batch (same generators, same order as one
    process) and trains on its slice ``[r·B/W, (r+1)·B/W)``; DDP averages the gradients, so the update is the
    one-process update with the same global batch, up to the order of float summation.

    SAM: with ``sam_sync`` (default) the first-pass gradient is all-reduced too, so every rank perturbs the
    weights by the same ``e = ρ g / ‖g‖`` of the global-batch gradient (the one-process SAM step). Without it
    the first pass runs under ``no_sync``: each rank perturbs by its own slice's gradient (per-rank,
    "m-sharpness" with m = B/W, as in Foret et al. 2021 sec. 4), and only the second pass is averaged.
    """

    def __init__(self, batch_size: int, sam_sync: bool = True) -> None:
        self.world, self.rank = world(), rank()
        self.sam_sync = bool(sam_sync)
        if batch_size % self.world:
            raise UsageError(f"--batch-size {batch_size}: must be divisible by the {self.world} ranks "
                             "(it is the global batch, split evenly)")
        self.per_rank = batch_size // self.world

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the step runs (DDP around ``model``; ``model`` itself in one process)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def first_pass_context(self, step_model: torch.nn.Module) -> Callable[[], Any]:
        if self.enabled and not self.sam_sync:
            return step_model.no_sync
        return contextlib.nullcontext

    def local(self, batch: Any) -> Any:
        """This rank's slice of a global :class:`~flatkit.train.step.Batch` (the batch itself in one process).

        Dropout masks: each rank seeds dropout from the batch's seed and its rank (masks cannot be the
        one-process masks of those samples, which depend on the whole batch's shape)."""
        if not self.enabled:
            return batch
        import dataclasses

        s = slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
        return dataclasses.replace(
            batch, x0=batch.x0[s], t=batch.t[s], weights=batch.weights[s], noise=batch.noise[s],
            ip_noise=None if batch.ip_noise is None else batch.ip_noise[s],
            dropout_seed=(int(batch.dropout_seed) + self.rank) % (2**62))

    def gather(self, res: Any, batch: Any) -> Any:
        """The step result with the global batch's per-sample losses (rank order = batch order) and its
        importance-weighted mean loss, identical on every rank."""
        if not self.enabled:
            return res
        import dataclasses

        losses = torch.cat([torch.as_tensor(x) for x in all_gather_objects(res.losses.cpu())])
        loss = float((losses * batch.weights.detach().cpu().float()).mean())
        return dataclasses.replace(res, losses=losses, loss=loss)
