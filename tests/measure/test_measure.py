import math

import pytest
import torch
import torch.nn as nn

from entroprune.measure import (
    compare_latency,
    count_depth,
    count_macs,
    count_params,
    latency_pairs,
    layer_costs,
    measure_latency,
)
from entroprune.models import create, list_models


def test_conv_and_linear_macs_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),            # 8*8*8 outputs * 3*9 = 13,824
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # 8*4*4 * 1*9 = 1,152
        nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 5),   # 128*5 = 640
    )
    rows = layer_costs(model, (3, 8, 8))
    assert [r.macs for r in rows] == [13824, 1152, 0, 640]
    assert rows[1].shape == "8->8 k3 s2 g8" and rows[1].out_shape == (8, 4, 4)
    assert count_macs(model, (3, 8, 8)) == 13824 + 1152 + 640
    assert count_params(model) == (3 * 9 * 8 + 8) + (9 * 8 + 8) + 16 + (128 * 5 + 5)


@pytest.mark.parametrize("name", list_models())
def test_macs_per_layer_agree_with_torch_pruning_unpruned_and_pruned(name):
    """Every Conv2d and Linear, on every zoo model and an L1-pruned copy of it
    (uneven widths, the last layer's inputs shrunk): our MACs plus one add per
    biased output (torch-pruning counts the bias; we do not) equal
    torch-pruning's per-layer op count."""
    import torch_pruning as tp

    from entroprune.measure.complexity import layer_macs
    from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs

    shape = (1, 28, 28)
    model = create(name).eval()
    pruned, _ = prune_to_macs(model, get_criterion("l1"), shape, PruneConfig(target_macs=0.4))
    for net in (model, pruned):
        ours = {r.name: r for r in layer_costs(net, shape)}
        _, _, theirs, _ = tp.utils.count_ops_and_params(net, torch.zeros(1, *shape), layer_wise=True)
        layers = {n: m for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        assert layers and set(layers) <= set(ours)
        for n, m in layers.items():
            row = ours[n]
            assert row.macs == layer_macs(m, row.out_shape) > 0
            bias_adds = math.prod(row.out_shape) if m.bias is not None else 0
            assert row.macs + bias_adds == theirs[m], (name, n)
    assert count_macs(pruned, shape) < 0.45 * count_macs(model, shape)   # the pruned copy really differs


def test_macs_kept_is_the_pruned_layers_share_of_the_whole_layers_macs():
    from entroprune.measure.complexity import layer_macs, macs_kept

    def out_shape(m):                   # 5x5 output maps, or a vector
        return (m.out_channels, 5, 5) if isinstance(m, nn.Conv2d) else (m.out_features,)

    cases = [(nn.Conv2d(8, 12, 3), nn.Conv2d(4, 9, 3)),                          # dense: outputs and inputs
             (nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(6, 6, 3, groups=6)),       # depthwise: once
             (nn.Conv2d(8, 12, 1, groups=4), nn.Conv2d(4, 8, 1, groups=4)),      # grouped: both
             (nn.Linear(10, 4), nn.Linear(5, 2))]
    for whole, part in cases:
        k_out = out_shape(part)[0] / out_shape(whole)[0]
        k_in = (part.in_channels / whole.in_channels if isinstance(part, nn.Conv2d)
                else part.in_features / whole.in_features)
        share = layer_macs(part, out_shape(part)) / layer_macs(whole, out_shape(whole))
        assert macs_kept(whole, k_out, k_in) == pytest.approx(share), whole


def test_lenet5_macs_by_hand():
    # conv1 6*28*28*25 + conv2 16*10*10*150 + 400*120 + 120*84 + 84*10
    assert count_macs(create("lenet5"), (1, 28, 28)) == 117600 + 240000 + 48000 + 10080 + 840


def test_depth():
    d = count_depth(create("resnet20"))
    assert (d.nonlinear, d.conv_linear) == (19, 22)   # 1 stem + 2 per block; 21 convs + fc
    d = count_depth(create("lenet5"))
    assert (d.nonlinear, d.conv_linear) == (4, 5)


class _Stack(nn.Sequential):
    """``depth`` 3x3 convolutions of ``width`` channels on a 1-channel input."""

    def __init__(self, width: int, depth: int):
        layers = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        super().__init__(*layers)


def test_latency_is_positive_and_ordered():
    # the big model costs >1000x the MACs of the small one (about a
    # millisecond against tens of microseconds per image), so a noisy shared CPU
    # cannot swap their medians; one thread, so that waiting for a busy second
    # core (thread hand-off costs the same for both models) cannot dominate
    shape = (1, 28, 28)
    small, big = _Stack(4, 1), _Stack(64, 2)
    assert count_macs(big, shape) > 1000 * count_macs(small, shape)
    assert measure_latency(small, shape, repeats=3, warmup=1, threads=1) > 0
    b, p = compare_latency(big, small, shape, batch_size=4, repeats=5, warmup=1, threads=1)
    assert 0 < p < b
    pairs = latency_pairs(big, small, shape, (1, 8), repeats=5, threads=1)
    assert [q.batch_size for q in pairs] == [1, 8]
    for q in pairs:
        assert 0 < q.pruned_ms < q.base_ms and q.speedup > 1
    # reversed roles: "pruning" the small model into the big one is a slowdown
    (q,) = latency_pairs(small, big, shape, (1,), repeats=5, threads=1)
    assert q.speedup < 1


class _FakeClock:
    """Stands in for ``time`` in the latency module: the clock moves only when
    a ``_Scripted`` model runs, by that model's next scripted duration."""

    def __init__(self):
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class _Scripted(nn.Module):
    def __init__(self, clock: _FakeClock, seconds: list[float]):
        super().__init__()
        self.clock, self.seconds, self.calls = clock, list(seconds), 0

    def forward(self, x):
        self.clock.now += self.seconds[self.calls]
        self.calls += 1
        return x


def test_latency_reports_medians_of_the_timed_runs_after_warmup(monkeypatch):
    from entroprune.measure import runtime

    clock = _FakeClock()
    monkeypatch.setattr(runtime, "time", clock)   # the timing loop shared by every runtime
    # the first two runs of each model are warm-up: 50 s outliers that must not count
    base = _Scripted(clock, [50.0, 50.0, 0.004, 0.001, 0.009, 0.002, 0.003])   # median 3 ms
    pruned = _Scripted(clock, [50.0, 50.0, 0.0005, 0.0002, 0.0001, 0.0007, 0.0008])  # median 0.5 ms
    b, p = compare_latency(base, pruned, (1, 4, 4), repeats=5, warmup=2, runtime="torch")
    assert base.calls == pruned.calls == 7
    assert b == pytest.approx(3.0) and p == pytest.approx(0.5)
    even = _Scripted(clock, [50.0, 0.004, 0.001, 0.002, 0.010])                # median (2+4)/2 ms
    assert measure_latency(even, (1, 4, 4), repeats=4, warmup=1, runtime="torch") == pytest.approx(3.0)
    # latency_pairs: one pair per batch size, speedup = base / pruned medians
    base = _Scripted(clock, [50.0] * 5 + [0.001, 0.006, 0.004])                # 5 warm-up runs
    pruned = _Scripted(clock, [50.0] * 5 + [0.003, 0.001, 0.002])
    (q,) = latency_pairs(base, pruned, (1, 4, 4), (2,), repeats=3, runtime="torch")
    assert (q.batch_size, q.base_ms, q.pruned_ms) == (2, pytest.approx(4.0), pytest.approx(2.0))
    assert q.speedup == pytest.approx(2.0)


class _ThreadProbe(nn.Module):
    """Records ``torch.get_num_threads()`` at every forward pass."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.seen: list[int] = []
        self.fail = fail

    def forward(self, x):
        self.seen.append(torch.get_num_threads())
        if self.fail:
            raise RuntimeError("boom")
        return x


@pytest.fixture
def caller_threads():
    """A distinctive thread count set by the caller, put back after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_latency_runs_on_the_given_threads_and_restores_the_callers(caller_threads, threads):
    probe = _ThreadProbe()
    measure_latency(probe, (1, 4, 4), repeats=3, warmup=2, threads=threads, runtime="torch")
    assert probe.seen == [threads] * 5
    assert torch.get_num_threads() == caller_threads
    base, pruned = _ThreadProbe(), _ThreadProbe()
    compare_latency(base, pruned, (1, 4, 4), repeats=2, warmup=1, threads=threads, runtime="torch")
    assert base.seen == pruned.seen == [threads] * 3
    assert torch.get_num_threads() == caller_threads


def test_latency_restores_threads_and_mode_when_the_model_fails(caller_threads):
    probe = _ThreadProbe(fail=True).train()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(probe, (1, 4, 4), repeats=3, warmup=1, threads=1, runtime="torch")
    assert probe.seen == [1]
    assert torch.get_num_threads() == caller_threads and probe.training


def test_measurement_restores_training_mode():
    m = create("lenet5").train()
    layer_costs(m, (1, 28, 28))
    measure_latency(m, (1, 28, 28), repeats=1, warmup=0)
    assert m.training and all(sub.training for sub in m.modules())
    m.eval()
    measure_latency(m, (1, 28, 28), repeats=1, warmup=0)
    assert not any(sub.training for sub in m.modules())


def test_conv_linear_count_is_read_from_old_reports_too():
    from entroprune.reporting.compress_report import conv_linear
    from entroprune.reporting.summary import ModelSummary

    model = create("lenet5")
    now = ModelSummary(1, 2, count_depth(model).nonlinear, count_depth(model).conv_linear, 90.0, 89.0).to_dict()
    assert conv_linear(now) == 5 and "weighted" not in now
    old = {k if k != "conv_linear" else "weighted": v for k, v in now.items()}   # a report.json of before the rename
    assert conv_linear(old) == 5
