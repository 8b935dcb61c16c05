"""Worker of test_accounting_training_memory_torch.py's FSDP2 check (run by torch.distributed.run, 2 gloo ranks;
not a test): shard the tiny model with FSDP2 (experiments.distributed.wrap), take one AdamW step, write this rank's
local bytes of parameters, gradients and AdamW moments to ``<out>/rank<r>.json``."""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from experiments import distributed
from experiments.config import compose, validate
from experiments.trainer import build_model, make_optimizer


def local_bytes(tensors) -> int:
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() * t.element_size() for t in tensors)


def main(out: str, model: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    info = distributed.DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=dist.get_rank(),
                                device=torch.device("cpu"))
    spec = validate(compose([f"model={model}", "size=tiny", "model.backend=grouped"]))
    torch.manual_seed(0)
    m = distributed.wrap(build_model(spec), info, "fsdp")
    opt = make_optimizer(m, spec.cfg["optim"], torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, spec.shape.vocab_size, (2, spec.shape.seq_len), generator=g)
    m(idx, idx).loss.backward()
    opt.step()
    params = list(m.parameters())
    rec = {"weights": local_bytes(params), "gradients": local_bytes(p.grad for p in params),
           "optimizer": local_bytes(st[k] for st in opt.state.values() for k in ("exp_avg", "exp_avg_sq"))}
    with open(f"{out}/rank{dist.get_rank()}.json", "w") as f:
        json.dump(rec, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
