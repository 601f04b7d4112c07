import pytest
import torch
import torch.nn as nn

import entroprune
from entroprune.measure import count_macs, count_params, layer_costs
from entroprune.models import create
from entroprune.sparsify import EntropicConfig, SparsifyConfig, SparsifyError, find_producer, select_channels, sparsify
from entroprune.training import evaluate

SHAPE = (1, 28, 28)


def _in_channels(model):
    return {n: (m.in_channels if isinstance(m, nn.Conv2d) else m.in_features)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.fixture(scope="module")
def calib():
    return torch.randn(48, *SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name, expected_skip", [
    ("lenet5", {"features.0"}),
    ("vgg_small", {"features.0"}),
])
def test_structural_removal_shrinks_channels_and_runs(name, expected_skip, calib):
    torch.manual_seed(0)
    model = create(name).eval()
    cfg = SparsifyConfig(solver=EntropicConfig(max_iter=3), target=0.4, n_patches=512)
    small, rep = sparsify(model, calib, cfg)
    before, after = _in_channels(model), _in_channels(small)
    assert set(rep["skipped"]) == expected_skip
    for lname, rec in rep["layers"].items():
        if lname in expected_skip:
            assert after[lname] == before[lname]
            continue
        producer = small.get_submodule(rec["producer"])
        c = len(rec["w"])
        assert len(rec["removed"]) == round(0.4 * c)     # the target fraction of its channels
        width = producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features
        assert width == c - len(rec["removed"])          # producer lost its output channels
        assert after[lname] == before[lname] * width // c
        assert rec["in_channels_after"] == after[lname] < before[lname]
        assert rec["rel_error_refit"] <= rec["rel_error_pruned"]
    # BatchNorm follows its convolution
    for m_name, m in small.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            conv = small.get_submodule(m_name.rsplit(".", 1)[0] + "." + str(int(m_name.rsplit(".", 1)[1]) - 1))
            assert m.num_features == conv.out_channels
    assert small(torch.randn(3, *SHAPE)).shape == (3, 10)
    assert small(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    # report totals are the measured ones
    assert rep["macs_before"] == count_macs(model, SHAPE) and rep["macs_after"] == count_macs(small, SHAPE)
    assert rep["params_after"] == count_params(small)
    assert rep["weight_sparsity"] == pytest.approx(1 - count_params(small) / count_params(model))
    assert sum(r["macs_after"] for r in rep["layers"].values()) == rep["macs_after"]
    costs = {r.name: r.macs for r in layer_costs(small, SHAPE)}
    assert all(costs[n] == r["macs_after"] for n, r in rep["layers"].items())
    assert rep["channels_after"] == sum(after[n] // (before[n] // len(r["w"]))
                                        for n, r in rep["layers"].items() if "w" in r)
    # the original is untouched
    assert _in_channels(model) == before


def test_residual_and_depthwise_layers_are_skipped_with_reasons():
    model = create("resnet20").eval()
    ex = torch.zeros(1, *SHAPE)
    assert isinstance(find_producer(model, model.layer1[0].conv2, ex), tuple)
    assert "residual" in find_producer(model, model.layer1[1].conv1, ex)
    assert "residual" in find_producer(model, model.fc, ex)
    assert "input" in find_producer(model, model.conv1, ex)
    mb = create("mobilenetv2").eval()
    dw = next(m for m in mb.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
    assert "depthwise" in find_producer(mb, dw, ex)
    _, producer, _, block = find_producer(*(lambda m: (m, m.classifier[1], ex))(create("lenet5")))
    assert block == 25 and isinstance(producer, nn.Conv2d)     # the flatten: 16 channels x 5x5


def test_resnet_sparsifies_only_inner_block_convs(calib):
    model = create("resnet20").eval()
    small, rep = sparsify(model, calib[:16], SparsifyConfig(solver=EntropicConfig(max_iter=2), target=0.5,
                                                            n_patches=256))
    done = {n for n, r in rep["layers"].items() if "skipped" not in r}
    assert done == {f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(3)}
    assert small.layer2[1].conv1.out_channels == 16 and small.layer2[1].conv2.in_channels == 16
    assert small(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_select_channels():
    w = torch.tensor([0.30, 0.001, 0.25, 0.004, 0.445])
    assert select_channels(w, SparsifyConfig(threshold=0.1)) == [1, 3]          # below 0.1 / 5
    assert select_channels(w, SparsifyConfig(target=0.6)) == [1, 2, 3]
    assert select_channels(w, SparsifyConfig(target=0.9, min_keep=0.5)) == [1, 3]
    assert select_channels(w, SparsifyConfig(threshold=10.0, min_channels=2)) == [1, 2, 3]


def test_bad_requests(calib):
    model = create("lenet5")
    with pytest.raises(SparsifyError, match="target"):
        sparsify(model, calib, SparsifyConfig(target=1.5))
    with pytest.raises(SparsifyError, match="eps_E"):
        sparsify(model, calib, SparsifyConfig(solver=EntropicConfig(eps_e=-1)))
    with pytest.raises(SparsifyError, match="not a module"):
        sparsify(model, calib, SparsifyConfig(ignored_layers=["nope"]))
    with pytest.raises(SparsifyError, match="at least 2"):
        sparsify(model, calib[:1])


@pytest.fixture(scope="module")
def shipped_lenet():
    return entroprune.load(entroprune.pretrained_path("lenet5"))


@pytest.fixture(scope="module")
def sparsified_lenet(shipped_lenet, fmnist_small):
    return sparsify(shipped_lenet, fmnist_small.calibration(512), SparsifyConfig())


def test_end_to_end_on_fashion_mnist(shipped_lenet, sparsified_lenet, fmnist_small):
    small, rep = sparsified_lenet
    base = evaluate(shipped_lenet, fmnist_small.val_x, fmnist_small.val_y)
    acc = evaluate(small, fmnist_small.val_x, fmnist_small.val_y)
    assert base > 90.0
    assert rep["weight_sparsity"] > 0.5 and rep["channel_sparsity"] > 0.3 and rep["macs_ratio"] > 1.3
    assert acc > 88.0 and base - acc < 2.0
    for name, rec in rep["layers"].items():
        if "skipped" in rec:
            continue
        assert rec["objective"] == sorted(rec["objective"], reverse=True)   # non-increasing
        assert rec["rel_error_refit"] < rec["rel_error_pruned"] or not rec["removed"]
        assert rec["rel_error_refit"] < 0.1, name
    # a fixed fraction: accuracy stays sane at 30% of the channels removed
    small30, rep30 = sparsify(shipped_lenet, fmnist_small.calibration(512), SparsifyConfig(target=0.3))
    assert rep30["channel_sparsity"] == pytest.approx(0.3, abs=0.02)
    assert evaluate(small30, fmnist_small.val_x, fmnist_small.val_y) > 85.0


def test_deterministic_and_round_trips(sparsified_lenet, shipped_lenet, fmnist_small, tmp_path):
    small, rep = sparsified_lenet
    again, _ = sparsify(shipped_lenet, fmnist_small.calibration(512), SparsifyConfig())
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), again.state_dict().values()))
    assert small.entroprune_history[-1] is rep and rep["op"] == "sparsify"
    path = entroprune.save(small, tmp_path / "s.safetensors")
    loaded = entroprune.load(path)
    x = fmnist_small.test_x[:200]
    with torch.no_grad():
        assert torch.equal(small.eval()(x), loaded(x))
    assert loaded.entroprune_history[-1]["op"] == "sparsify"
    assert loaded.entroprune_history[-1]["weight_sparsity"] == rep["weight_sparsity"]
    assert _in_channels(loaded) == _in_channels(small)
