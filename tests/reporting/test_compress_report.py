"""The compression report's advice on which file to ship, from measured latencies."""

from entroprune.reporting.compress_report import ship_advice


def report(fp32_ms: dict[str, float], int8_ms: dict[str, float], runtime: str = "onnxruntime") -> dict:
    lat = lambda ms: {k: {"base_ms": 1.0, "pruned_ms": v, "speedup": 1.0 / v} for k, v in ms.items()}  # noqa: E731
    return {"config": {"runtime": runtime}, "latency": {runtime: lat(fp32_ms)},
            "quantized": {"latency": lat(int8_ms)}}


def test_int8_slower_everywhere_means_ship_fp32():
    text = ship_advice(report({"bs1": 0.11, "bs64": 4.0}, {"bs1": 0.20, "bs64": 6.0}))
    assert text.startswith("Ship the fp32 model") and "0.2 ms INT8, 0.11 ms fp32" in text


def test_int8_faster_everywhere_means_ship_int8():
    assert ship_advice(report({"bs1": 0.4}, {"bs1": 0.2})).startswith("Ship the INT8 model")


def test_mixed_batches_say_so():
    assert ship_advice(report({"bs1": 0.1, "bs64": 5.0}, {"bs1": 0.2, "bs64": 4.0})).startswith("Neither")


def test_no_int8_or_another_runtime_gives_no_advice():
    assert ship_advice({"config": {"runtime": "onnxruntime"}, "latency": {}}) is None
    assert ship_advice(report({"bs1": 0.1}, {"bs1": 0.2}, runtime="torch")) is None
