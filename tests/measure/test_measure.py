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
from entroprune.models import create


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


def test_lenet5_macs_by_hand():
    # conv1 6*28*28*25 + conv2 16*10*10*150 + 400*120 + 120*84 + 84*10
    assert count_macs(create("lenet5"), (1, 28, 28)) == 117600 + 240000 + 48000 + 10080 + 840


def test_depth():
    d = count_depth(create("resnet20"))
    assert (d.nonlinear, d.weighted) == (19, 22)   # 1 stem + 2 per block; 21 convs + fc
    d = count_depth(create("lenet5"))
    assert (d.nonlinear, d.weighted) == (4, 5)


def test_latency_is_positive_and_ordered():
    small = nn.Sequential(nn.Conv2d(1, 4, 3))
    big = nn.Sequential(nn.Conv2d(1, 64, 3), nn.Conv2d(64, 64, 3))
    assert measure_latency(small, (1, 28, 28), repeats=3, warmup=1) > 0
    b, p = compare_latency(big, small, (1, 28, 28), batch_size=4, repeats=5, warmup=1)
    assert b > 0 and p > 0
    pairs = latency_pairs(big, small, (1, 28, 28), (1, 8), repeats=5)
    assert [q.batch_size for q in pairs] == [1, 8]
    assert all(q.speedup == q.base_ms / q.pruned_ms for q in pairs)


def test_measurement_restores_training_mode():
    m = create("lenet5").train()
    layer_costs(m, (1, 28, 28))
    measure_latency(m, (1, 28, 28), repeats=1, warmup=0)
    assert m.training
    assert torch.get_num_threads() >= 1
