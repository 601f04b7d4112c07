"""The latency table: layer configs from a traced model, candidate widths, the
JSON cache and its key, the overhead fit. The timers are replaced by fakes
with known answers wherever a number is checked; one test measures for real
and checks only the structure of what it gets."""

import json

import numpy as np
import pytest
import torch.nn as nn

from entroprune.measure import latency_table as lt
from entroprune.measure.latency_table import (
    LatencyTable,
    LatencyTableError,
    LayerConfig,
    candidate_widths,
    fit_overhead,
    layer_configs,
    model_profile,
)
from entroprune.measure.onnx_layers import layer_model, null_model
from entroprune.measure.runtime import make_session
from entroprune.measure.table_timing import measure_layers
from entroprune.models import create


class _Block(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the input, then ReLU: a residual block."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True), _Block(4),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def test_layer_configs_follow_execution_order_with_folded_batchnorm_and_fused_activation():
    rows = layer_configs(_net(), (1, 16, 16))
    assert [n for n, _ in rows] == ["0", "2.conv1", "2.conv2", "5"]
    stem, c1, c2, fc = (c for _, c in rows)
    assert stem == LayerConfig("conv", 1, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1, (16, 16), bias=True, act=True)
    assert stem.out_hw == (8, 8) and c1.in_hw == (8, 8)
    assert (c1.bias, c1.act) == (True, True)           # BatchNorm folds into a bias, the ReLU fuses
    assert (c2.bias, c2.act) == (True, False)          # the ReLU follows the residual add, not the conv
    assert fc == LayerConfig("linear", 64, 3, bias=True)
    ops = [o.op for o in model_profile(_net(), (1, 16, 16)).others]
    assert ops == ["add", "relu", "max_pool2d"]
    assert len(layer_configs(create("resnet20"), (1, 28, 28))) == 22


def test_layer_config_is_hashable_json_serialisable_and_resizable():
    c = LayerConfig("conv", 16, 32, (3, 3), (2, 2), (1, 1), in_hw=(28, 28), act=True)
    back = LayerConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and hash(back) == hash(c) and len({c, back}) == 1
    assert c.key == "conv 16>32 k3x3 s2x2 p1x1 d1x1 g1 @28x28 +act"
    assert c.macs() == 32 * 14 * 14 * 16 * 9
    assert c.with_widths(8, 24) == LayerConfig("conv", 8, 24, (3, 3), (2, 2), (1, 1), in_hw=(28, 28), act=True)
    dw = LayerConfig("conv", 48, 48, (3, 3), padding=(1, 1), groups=48, in_hw=(14, 14))
    assert dw.depthwise and dw.with_widths(out_channels=40) == dw.__class__(
        "conv", 40, 40, (3, 3), padding=(1, 1), groups=40, in_hw=(14, 14))
    with pytest.raises(ValueError, match="groups"):
        LayerConfig("conv", 10, 12, groups=4)


def test_one_layer_and_null_models_have_the_layers_shapes():
    for cfg in (LayerConfig("conv", 3, 5, (3, 3), (2, 2), (1, 1), in_hw=(9, 7), bias=True, act=True),
                LayerConfig("linear", 6, 4, bias=True), LayerConfig("linear", 6, 4, in_hw=(5, 1))):
        for build in (layer_model, null_model):
            s = make_session(build(cfg, 2), threads=1)
            x = np.zeros(s.get_inputs()[0].shape, dtype=np.float32)
            y = s.run(None, {"x": x})[0]
            want = (2, cfg.out_channels, *cfg.out_hw) if cfg.kind == "conv" else (
                (2, cfg.out_channels) if cfg.in_hw == (1, 1) else (2, 5, cfg.out_channels))
            assert y.shape == want


def test_candidate_widths():
    assert candidate_widths(1) == [1]
    assert candidate_widths(12) == list(range(1, 13))
    w = candidate_widths(100)
    assert w[:16] == list(range(1, 17)) and w[-1] == 100 and w == sorted(set(w))
    assert {16, 32, 48, 64, 72, 80, 96} <= set(w) and 17 not in w and 98 not in w
    big = candidate_widths(1000)
    assert {128, 144, 256, 288, 1000} <= set(big) and 136 not in big and len(big) < 70
    with pytest.raises(ValueError):
        candidate_widths(0)


class _FakeTimer:
    """Stands in for the table's layer and model timers: a layer costs
    ``1e-6 * MACs * batch`` ms and "runs in NCHWc" when its output width is a
    multiple of 8; a whole model costs ``a + b1 * sum(NCHWc layers) + b2 *
    sum(other layers) + c * layers``."""

    def __init__(self, a=0.05, b1=0.8, b2=1.2, c=0.002):
        self.a, self.b1, self.b2, self.c = a, b1, b2, c
        self.layers: list[str] = []
        self.models = 0

    def measure_layers(self, configs, batch_size, threads, repeats, rounds, clock, tick=lambda: None):
        self.layers += [c.key for c in configs]
        return {c.key: {"ms": 1e-6 * c.macs() * batch_size, "layer_ms": 0.0, "null_ms": 0.0,
                        "nchwc": c.out_channels % 8 == 0} for c in configs}

    def measure_models(self, models, input_shape, batch_size, threads, repeats, rounds, clock):
        self.models += len(models)
        out = []
        for m in models:
            cfgs = [c for _, c in layer_configs(m, input_shape)]
            ms = [(1e-6 * c.macs() * batch_size, c.out_channels % 8 == 0) for c in cfgs]
            out.append(self.a + sum((self.b1 if blocked else self.b2) * t for t, blocked in ms) + self.c * len(cfgs))
        return [(ms, None) for ms in out]         # (ms, reference ms): no reference, no normalisation


@pytest.fixture
def fake(monkeypatch):
    timer = _FakeTimer()
    monkeypatch.setattr(lt, "measure_layers", timer.measure_layers)
    monkeypatch.setattr(lt, "measure_models", timer.measure_models)
    return timer


def test_table_cache_is_reused_for_the_same_key_only(fake, tmp_path):
    cfgs = [c for _, c in layer_configs(_net(), (1, 16, 16))]
    t1 = LatencyTable(threads=1, batch_size=1, cache_dir=tmp_path, progress=False)
    t1.ensure(cfgs)
    assert t1.measured == len(set(cfgs)) == len(fake.layers) and t1.path.exists()
    t2 = LatencyTable(threads=1, batch_size=1, cache_dir=tmp_path, progress=False)
    assert all(c in t2 for c in cfgs)
    t2.ensure(cfgs)
    assert t2.measured == 0 and len(fake.layers) == len(cfgs)          # nothing measured again
    assert t2.layer_ms(cfgs[0]) == t1.layer_ms(cfgs[0])
    other = [LatencyTable(threads=2, batch_size=1, cache_dir=tmp_path, progress=False),
             LatencyTable(threads=1, batch_size=64, cache_dir=tmp_path, progress=False)]
    assert len({t1.path, *(t.path for t in other)}) == 3 and all(len(t) == 0 for t in other)
    other[1].ensure(cfgs)
    assert other[1].measured == len(cfgs)
    # a file whose key is not this table's (here: edited) is never used
    data = json.loads(t1.path.read_text())
    data["key"]["cpu"] = "another CPU"
    t1.path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="another key"):
        t3 = LatencyTable(threads=1, batch_size=1, cache_dir=tmp_path, progress=False)
    assert len(t3) == 0


def test_cache_dir_defaults_to_the_environment_variable(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPRUNE_CACHE", str(tmp_path / "c"))
    t = LatencyTable(threads=1, batch_size=1, progress=False)
    assert t.path.parent == tmp_path / "c" / "latency"
    assert t.layer_ms(LayerConfig("linear", 10, 10)) == pytest.approx(1e-4)


def test_overhead_fit_recovers_known_parameters():
    rng = np.random.default_rng(0)
    pts = [{"const": 1.0, "nchwc_ms": s1, "plain_ms": s2, "layers": n, "other_mb": mb,
            "measured_ms": 0.03 + 0.8 * s1 + 1.1 * s2 + 0.001 * n + 0.2 * mb}
           for s1, s2, n, mb in zip(rng.uniform(0.1, 5, 12), rng.uniform(0, 3, 12), rng.integers(3, 60, 12),
                                    rng.uniform(0, 2, 12))]
    fit = fit_overhead(pts)
    assert fit.coef == pytest.approx({"const": 0.03, "nchwc_ms": 0.8, "plain_ms": 1.1, "layers": 0.001,
                                      "other_mb": 0.2}, rel=1e-6)
    assert fit.max_abs_error < 1e-9 and fit.models == 12
    with pytest.raises(LatencyTableError, match="at least"):
        fit_overhead(pts[:2])


def test_calibrate_then_predict_with_injected_timings(fake, tmp_path):
    models = [(f"m{i}", nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), *[
        m for _ in range(d) for m in (nn.Conv2d(w, w, 3, padding=1), nn.ReLU())]))
        for i, (w, d) in enumerate([(4, 1), (8, 2), (16, 1), (12, 4), (6, 6), (20, 2), (24, 3), (5, 2)])]
    table = LatencyTable(threads=1, batch_size=2, cache_dir=tmp_path, progress=False)
    with pytest.raises(LatencyTableError, match="calibrate"):
        table.predict(models[0][1], (1, 10, 10))
    fit = table.calibrate(models, (1, 10, 10))
    assert fit.coef["const"] == pytest.approx(fake.a)
    assert (fit.coef["nchwc_ms"], fit.coef["plain_ms"]) == (pytest.approx(fake.b1), pytest.approx(fake.b2))
    assert fit.coef["layers"] == pytest.approx(fake.c) and fit.max_abs_error < 1e-9
    unseen = nn.Sequential(nn.Conv2d(1, 10, 3, padding=1), nn.Conv2d(10, 5, 3, padding=1))
    want = fake.measure_models([unseen], (1, 10, 10), 2, 1, 1, 1, "cpu")[0][0]
    assert table.predict(unseen, (1, 10, 10)) == pytest.approx(want)
    # a caller summing entries without the NCHWc split gets the one-slope fit stored beside it
    f = table.features(unseen, (1, 10, 10))
    total_only = {k: f[k] for k in ("const", "layers_ms", "layers", "other_mb")}
    assert fit.predict(total_only) == pytest.approx(sum(fit.coef_total[k] * f[k] for k in total_only))
    with pytest.raises(KeyError, match="features"):
        fit.predict({"const": 1.0})
    # the fit and the whole-model measurements are stored: a new table predicts without measuring models
    again = LatencyTable(threads=1, batch_size=2, cache_dir=tmp_path, progress=False)
    assert again.predict(unseen, (1, 10, 10)) == pytest.approx(want)
    n = fake.models
    again.calibrate(models, (1, 10, 10))
    assert fake.models == n


def test_widths_ms_measures_the_candidate_widths(fake, tmp_path):
    table = LatencyTable(threads=1, batch_size=1, cache_dir=tmp_path, progress=False)
    conv = LayerConfig("conv", 8, 20, (3, 3), padding=(1, 1), in_hw=(7, 7))
    got = table.widths_ms(conv)
    assert list(got) == [(8, w) for w in candidate_widths(20)]
    assert got[(8, 20)] == pytest.approx(1e-6 * conv.macs())
    dw = LayerConfig("conv", 24, 24, (3, 3), padding=(1, 1), groups=24, in_hw=(7, 7))
    assert list(table.widths_ms(dw, out_widths=[8, 16])) == [(8, 8), (16, 16)]


def test_a_real_entry_is_the_layer_minus_its_null_graph():
    cfg = LayerConfig("conv", 4, 8, (3, 3), padding=(1, 1), in_hw=(8, 8), bias=True, act=True)
    (entry,) = measure_layers([cfg], batch_size=1, threads=1, repeats=3, rounds=1, clock="cpu").values()
    assert set(entry) == {"ms", "layer_ms", "null_ms", "ref_ms", "nchwc"} and entry["ref_ms"] > 0
    assert entry["nchwc"] in (True, False)
    assert entry["ms"] == pytest.approx(max(0.0, entry["layer_ms"] - entry["null_ms"]))


def test_entries_measured_on_a_slowed_machine_are_brought_to_the_quietest_speed(monkeypatch, tmp_path):
    slow = {"k": 1.0}          # the machine's slowdown while a chunk is measured; the reference slows alike

    def measure(configs, batch_size, threads, repeats, rounds, clock, tick=lambda: None):
        k = slow["k"]
        return {c.key: {"ms": 1e-6 * c.macs() * k, "layer_ms": 0.0, "null_ms": 0.0, "ref_ms": 0.5 * k}
                for c in configs}

    monkeypatch.setattr(lt, "measure_layers", measure)
    a, b = LayerConfig("linear", 100, 100), LayerConfig("linear", 100, 50)
    table = LatencyTable(threads=1, batch_size=1, cache_dir=tmp_path, normalize=True, progress=False)
    slow["k"] = 1.5
    assert table.layer_ms(a) == pytest.approx(1e-2 * 1.5)     # the only speed seen so far
    slow["k"] = 1.0
    assert table.layer_ms(b) == pytest.approx(5e-3)
    assert table.layer_ms(a) == pytest.approx(1e-2)           # now at the quieter speed
    raw = LatencyTable(threads=1, batch_size=1, cache_dir=tmp_path, progress=False)     # the default: raw
    assert raw.layer_ms(a) == pytest.approx(1e-2 * 1.5)
