"""End to end on the real Fashion-MNIST with the shipped ResNet-20."""

import json

import torch

from entroprune.entropy import ActivationStats, conv_sites
from entroprune.io import load
from entroprune.models.pretrained import pretrained_path
from entroprune.reporting.entropy_report import analyze


def test_trained_filters_are_more_structured_than_noise_input(fmnist):
    model = load(pretrained_path("resnet20"))
    images = fmnist.calibration(128, seed=0)
    sites = conv_sites(model)
    with ActivationStats(model, sites, ("aura",)) as real, torch.no_grad():
        model(images)
    flat = torch.zeros_like(images)   # a blank image: constant maps everywhere but the borders
    with ActivationStats(model, sites, ("aura",)) as blank, torch.no_grad():
        model(flat)
    r = torch.tensor([v["aura"] for v in real.per_layer().values()])
    b = torch.tensor([v["aura"] for v in blank.per_layer().values()])
    assert (r > b).float().mean() > 0.8


def test_analyze_writes_json_and_figures(fmnist, tmp_path):
    model = load(pretrained_path("lenet5"))
    res = analyze(model, fmnist.calibration(64), tmp_path, label="lenet5")
    doc = json.loads((tmp_path / "entropy.json").read_text())
    assert doc["conv_layers"]["features.0"]["filters"] == 6
    assert len(doc["conv_layers"]["features.3"]["aura_per_filter"]) == 16
    assert set(doc["rectifiers"]) == {"features.1", "features.4", "classifier.2", "classifier.4"}
    assert res["network"]["aura"] > 0
    for name in ("heatmap_aura.png", "layers.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
