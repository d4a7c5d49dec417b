"""CTKD under DistributedDataParallel: the temperature is a registered parameter, so two CPU (gloo)
ranks training on different data end with the same temperature (without DDP they drift apart)."""

import json
import os
import subprocess
import sys
import textwrap

import torch.distributed as dist
import pytest

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import logit_standardization.torch as lt


    class Distill(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = nn.Linear(8, 10)
            self.ctkd = lt.CTKDLoss()

        def forward(self, x, teacher_logits, grl_lambda):
            return self.ctkd(self.student(x), teacher_logits, grl_lambda=grl_lambda)


    def train(model, rank, sync):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        data = torch.Generator().manual_seed(100 + rank)  # every rank sees other data
        for epoch in range(1, 4):
            x = torch.randn(16, 8, generator=data)
            teacher = torch.randn(16, 10, generator=data) * (1 + 3 * rank)
            opt.zero_grad()
            model(x, teacher, lt.ctkd_lambda(epoch, loops=2)).backward()
            opt.step()
        inner = model.module if sync else model
        return float(inner.ctkd.raw_temperature), float(inner.ctkd.temperature)


    def worker(rank, world, init_file, out_dir):
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
        torch.manual_seed(0)
        synced = DDP(Distill())
        torch.manual_seed(0)
        alone = Distill()
        result = {"ddp": train(synced, rank, True), "alone": train(alone, rank, False),
                  "init": float(lt.ctkd_temperature(torch.tensor(1.0)))}
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
        dist.barrier()
        dist.destroy_process_group()


    if __name__ == "__main__":
        out = sys.argv[1]
        mp.spawn(worker, args=(2, out + "/init", out), nprocs=2, join=True)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_ranks_end_with_the_same_temperature(tmp_path):
    script = tmp_path / "ddp_ctkd.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["ddp"] == r1["ddp"]  # raw value and temperature, bit for bit
    assert abs(r0["ddp"][1] - r0["init"]) > 1e-5  # and it did train (float32 resolution at 15.6: 1e-6)
    assert abs(r0["alone"][1] - r1["alone"][1]) > 1e-5  # without DDP every rank keeps its own
