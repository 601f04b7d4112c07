"""``entroprune.compress`` from Python: data of any kind, settings checked where
they are built, a latency target through the search, the run folder's restart."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import entroprune
from entroprune import CompressConfig, compress
from entroprune.pipeline import CompressError
from entroprune.search import DDPGConfig, RewardConfig, SearchConfig


@pytest.fixture(scope="module")
def small(fmnist_small):
    d = fmnist_small
    return dataclasses.replace(d, val_x=d.val_x[:300], val_y=d.val_y[:300], test_x=d.test_x[:300],
                               test_y=d.test_y[:300])


def test_settings_are_checked_where_they_are_built():
    for bad, named in (({"target": "five"}, "write '5x'"), ({"scope": "layerwise"}, "scope"),
                       ({"method": "magic"}, "method"), ({"finetune_epochs": -1}, "finetune_epochs"),
                       ({"threads": 0}, "threads"), ({"target_kind": "joules"}, "target_kind")):
        with pytest.raises(CompressError, match=named):
            CompressConfig(**bad)
    assert CompressConfig(target="5x").keep == pytest.approx(0.2)


def test_tensors_and_a_user_finetune_function(small):
    calls = []

    def my_finetune(model, data):
        calls.append(data.train_x.shape)
        return "done"

    model = entroprune.create("lenet5", pretrained=True)
    data = (small.train_x[:500], small.train_y[:500], small.val_x, small.val_y)     # tensors, no test set
    pruned, report = compress(model, data, target="2x", finetune_fn=my_finetune, measure_latency=False,
                              progress=False, calib_size=64)
    assert calls == [(500, 1, 28, 28)] and report["finetune"]["result"] == "done"
    assert "test = validation" in report["data"]
    assert abs(report["macs_ratio"] - 2.0) < 0.05 and not pruned.training


def test_the_search_meets_a_latency_target_and_restart_starts_over(small, tmp_path):
    model = entroprune.create("resnet20", pretrained=True)
    cfg = CompressConfig(target="1.5x", target_kind="latency", method="search", finetune_epochs=0, progress=False,
                         latency_batches=(1,), latency_repeats=10,
                         search=SearchConfig(episodes=4, agent=DDPGConfig(warmup=2, batch_size=8),
                                             rewards=RewardConfig(calib_size=32, val_subset=100)))
    _, report = compress(model, small, cfg, out=tmp_path)
    # the wall spends predicted milliseconds: every episode ends at 1/1.5 of the predicted time
    log = (tmp_path / "search" / "search_log.jsonl").read_text().splitlines()
    import json
    assert all(abs(json.loads(line)["cost_fraction"] * 1.5 - 1) < 0.05 for line in log)
    assert report["target"]["kind"] == "latency" and report["target"]["measured_speedup"] > 1.0
    _, again = compress(model, small, cfg, out=tmp_path, restart=True)           # starts over, same result
    assert again["remove"]["channels"] == report["remove"]["channels"]


def test_a_job_that_fails_before_saving_anything_leaves_the_folder_free(small, tmp_path):
    model = entroprune.create("lenet5", pretrained=True)
    with pytest.raises(ValueError, match="min_keep"):                 # 50x fewer MACs is below the floor
        compress(model, small, target="50x", finetune_epochs=0, measure_latency=False, progress=False,
                 calib_size=64, out=tmp_path)
    assert not (tmp_path / "compress.json").exists()
    _, report = compress(model, small, target="2x", finetune_epochs=0, measure_latency=False, progress=False,
                         calib_size=64, eval_stages=False, out=tmp_path)    # other settings, same folder: fine
    assert abs(report["macs_ratio"] - 2.0) < 0.05 and (tmp_path / "compress.json").exists()


def test_an_interrupted_job_fine_tunes_the_same_pruned_model(small, tmp_path, capsys):
    model = entroprune.create("lenet5", pretrained=True)
    seen = []

    def interrupted(m, data):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        if len(seen) == 1:
            raise KeyboardInterrupt                                  # the session stops during fine-tuning

    kw = dict(target="2x", measure_latency=False, progress=False, calib_size=64, finetune_fn=interrupted)
    with pytest.raises(KeyboardInterrupt):
        compress(model, small, out=tmp_path, **kw)
    assert (tmp_path / "structure.safetensors").exists()
    _, report = compress(model, small, out=tmp_path, **kw)
    assert "resuming after the structural stages" in capsys.readouterr().out
    assert seen[0].keys() == seen[1].keys() and all(torch.equal(seen[0][k], seen[1][k]) for k in seen[0])
    assert "reconstruct" in report and abs(report["macs_ratio"] - 2.0) < 0.05
    assert not (tmp_path / "structure.safetensors").exists()           # removed once the run finished
