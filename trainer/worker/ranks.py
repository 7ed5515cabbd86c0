"""This process's place in a multi-process run (`home train --gpus N`): its rank, the world size, and the
few collectives the recipe needs beyond what the Trainer does itself.

A single-process run sees `World(0, 1)` and every helper is a no-op, so `train_adapter` reads the same
either way. The ranks are started by trainer/worker/distributed.py with the torchrun environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); `init` joins the process group (gloo on the CPU, nccl on GPUs)
before the Trainer, which then uses that group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The world this process is in: from the process group when one is up, else from the environment."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


def init(device: str) -> World:
    """Join the process group the launcher described in the environment (env:// rendezvous)."""
    import torch
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    return world()


def close() -> None:
    """Leave the process group in order once every rank has finished: all past their last collective
    (a barrier), the others first, rank 0 last. Why: rank 0's process hosts the rendezvous store and
    one end of every peer's connection; when it went first, a peer still tearing its group down could
    read "connection closed by peer" on a gloo thread, which aborts the process (CI: a finished,
    registered FSDP run failed on rank 1's exit code -6). Only for a run that ended well: after a
    failure a peer may be dead or stuck in a collective, and the process just exits."""
    import datetime

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    me = world()
    if me.size == 1:
        dist.destroy_process_group()
        return
    store = dist.distributed_c10d._get_default_store()  # kept: rank 0 waits on it after the group is gone
    dist.barrier()
    if not me.main:
        dist.destroy_process_group()
        store.set(f"home-closed/{me.rank}", "1")
        return
    try:
        store.wait([f"home-closed/{r}" for r in range(1, me.size)], datetime.timedelta(seconds=60))
    finally:
        dist.destroy_process_group()


def from_main(value: Any) -> Any:
    """`value` as rank 0 has it, on every rank (a resume point, or the error that refused one)."""
    import torch.distributed as dist

    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any: a stop request must end the same step everywhere,
    or the ranks that go on wait forever for the one that stopped."""
    import torch
    import torch.distributed as dist

    if world().size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_ints(value: int) -> list[int]:
    """`value` from every rank, in rank order, on every rank."""
    import torch
    import torch.distributed as dist

    size = world().size
    if size == 1:
        return [int(value)]
    mine = torch.tensor([int(value)], dtype=torch.long, device=_collective_device())
    out = [torch.zeros_like(mine) for _ in range(size)]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def average_gradients(model: Any) -> None:
    """Average every trainable weight's gradient over the ranks as soon as backward has accumulated it.

    Why not DDP's own: DDP all-reduces only after a forward through its wrapper, and the recipe's loss
    (trainer/worker/loss.py) runs the decoder and the output layer apart, past the wrapper: measured on
    the tiny Llama without dropout, two ranks then each stepped on their own half of the batch (grad
    norms 0.250/0.415 against one process's 0.230/0.290 on the same weights and data, losses apart from
    step 3); averaged here, the grad norms and losses of the first four steps are one process's to the
    4th decimal. Averaging after each micro-batch is the same as once per step: the sum is linear."""
    import torch.distributed as dist

    size = world().size
    if size == 1:
        return

    def average(p: Any) -> None:
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(size)

    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(average)


def sum_ints(value: int) -> int:
    return sum(gather_ints(value))


def _collective_device() -> Any:
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
