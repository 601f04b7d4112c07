"""The runtime interface: torch and ONNX Runtime runners, the shared timing
loop. Timings are never compared with values here (they are benchmarks);
only their structure, the outputs and the state put back are checked."""

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from entroprune.export import export_model
from entroprune.measure import OnnxRuntime, TorchRuntime, get_runtime, measure_latency, time_models
from entroprune.measure import runtime as rt_mod

SHAPE = (1, 12, 12)


def _small() -> nn.Module:
    """Conv-BN-ReLU, a depthwise conv, pooling and a linear head; BatchNorm
    statistics away from the identity so that folding it is exercised."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    bn = m[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    return m


def test_both_runtimes_time_a_model_with_a_positive_median():
    m = _small()
    runners = [get_runtime(name, threads=1).runner(m, SHAPE, batch_size=2) for name in ("torch", "onnxruntime")]
    medians = time_models(runners, repeats=3, warmup=1)
    assert len(medians) == 2 and all(t > 0 for t in medians)
    assert measure_latency(m, SHAPE, repeats=2, warmup=1, threads=1) > 0      # default runtime: onnxruntime


def test_onnxruntime_outputs_equal_torch_outputs():
    m = _small().train()                    # export must run it in eval mode, and give the mode back
    ort_out = OnnxRuntime(1).runner(m, SHAPE, batch_size=3).output()
    assert m.training
    torch_out = TorchRuntime(1).runner(m, SHAPE, batch_size=3).output()   # same seeded (3, 1, 12, 12) input
    assert ort_out.shape == torch_out.shape == (3, 5)
    np.testing.assert_allclose(ort_out, torch_out, atol=1e-5, rtol=0)


@pytest.fixture
def caller_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


class _Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen: list[tuple[int, bool]] = []

    def forward(self, x):
        self.seen.append((torch.get_num_threads(), self.training))
        return x


def test_torch_runner_sets_threads_and_eval_mode_then_restores_them(caller_threads):
    probe = _Probe().train()
    runner = TorchRuntime(threads=2).runner(probe, SHAPE)
    time_models([runner], repeats=2, warmup=1)
    runner()                                   # not entered: set and restored around the call
    assert probe.seen == [(2, False)] * 4
    assert torch.get_num_threads() == caller_threads and probe.training


def test_torch_runtime_refuses_a_file_and_onnxruntime_times_one(tmp_path):
    path = export_model(_small(), tmp_path / "m.onnx", "onnx", torch.zeros(1, *SHAPE))
    with pytest.raises(TypeError, match="onnxruntime"):
        TorchRuntime(1).runner(path, SHAPE)
    assert measure_latency(str(path), SHAPE, batch_size=2, repeats=2, warmup=1, threads=1) > 0
    with pytest.raises(FileNotFoundError, match="entroprune export"):
        OnnxRuntime(1).runner(tmp_path / "missing.onnx", SHAPE)


def test_unknown_runtime_and_bad_threads_are_clear_errors():
    with pytest.raises(ValueError, match="torch, onnxruntime"):
        get_runtime("tensorrt")
    with pytest.raises(ValueError, match="threads"):
        TorchRuntime(0)
    rt = OnnxRuntime(2)
    assert get_runtime(rt) is rt and rt.name == "onnxruntime" and rt.version and rt.threads == 2


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)      # import onnxruntime -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'entroprune\[export\]'"):
        OnnxRuntime(1)
    with pytest.raises(ImportError, match="export"):
        measure_latency(_small(), SHAPE, repeats=1, warmup=0)


class _Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


def test_time_models_interleaves_warmup_repeats_and_inner_calls():
    a, b = _Counter(), _Counter()
    samples = rt_mod.time_samples([a, b], repeats=4, warmup=2, inner=[3, 1], clock="cpu")
    assert (a.calls, b.calls) == (2 + 4 * 3, 2 + 4)
    assert [len(s) for s in samples] == [4, 4]
    with pytest.raises(ValueError, match="clock"):
        time_models([a], clock="gpu")
    with pytest.raises(ValueError, match="inner"):
        time_models([a, b], inner=[1])
