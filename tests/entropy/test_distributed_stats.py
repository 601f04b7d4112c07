"""Under torch.distributed, each process sees half of the calibration images
and the statistics are all-reduced: both ranks must return exactly what one
process computes over all images."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    from entroprune.models import create
    from entroprune.entropy import ActivationStats, RectifierStats, conv_sites, rectifiers
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = create("lenet5").eval()
    x = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    def run(images):
        with ActivationStats(model, conv_sites(model), ("aura", "mass")) as a, \\
                RectifierStats(model, list(rectifiers(model))) as r, torch.no_grad():
            model(images)
        return ({k: {e: t.tolist() for e, t in v.items()} for k, v in a.per_filter().items()},
                {k: v.tolist() for k, v in r.p_on().items()})
    shard = run(x[rank::world])
    if rank == 0:
        print("RESULT", json.dumps(shard))
    dist.barrier()
    dist.destroy_process_group()
""")


def test_stats_are_all_reduced_across_processes(tmp_path, free_port):
    script = tmp_path / "stats_ddp.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", free_port, str(script)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT"))
    shard_filters, shard_pon = json.loads(line[len("RESULT "):])

    import torch

    from entroprune.entropy import ActivationStats, RectifierStats, conv_sites, rectifiers
    from entroprune.models import create
    torch.manual_seed(0)
    model = create("lenet5").eval()
    x = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with ActivationStats(model, conv_sites(model), ("aura", "mass")) as a, \
            RectifierStats(model, list(rectifiers(model))) as r, torch.no_grad():
        model(x)
    for layer, ests in a.per_filter().items():
        for est, t in ests.items():
            assert torch.allclose(torch.tensor(shard_filters[layer][est]), t, atol=1e-5), (layer, est)
    for name, p in r.p_on().items():
        assert torch.allclose(torch.tensor(shard_pon[name], dtype=p.dtype), p)
