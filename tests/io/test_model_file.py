import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from entroprune.io import ModelFileError, load, save
from entroprune.io.atomic import atomic_write
from entroprune.models import create, list_models
from entroprune.pruning import PruneConfig, get_criterion, prune_to_macs


def _outputs(model, shape=(1, 28, 28)):
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("pruned", [False, True])
def test_round_trip_is_bit_exact(name, pruned, tmp_path):
    torch.manual_seed(0)
    model = create(name).eval()
    if pruned:
        model, _ = prune_to_macs(model, get_criterion("l1"), (1, 28, 28), PruneConfig(target_macs=0.4))
    # make BatchNorm statistics non-trivial so that buffers matter
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    path = save(model, tmp_path / "m.safetensors")
    again = load(path)
    assert torch.equal(_outputs(model), _outputs(again))
    assert again.entroprune_history == getattr(model, "entroprune_history", [])


def test_reload_in_a_fresh_process_is_bit_exact(tmp_path):
    model, _ = prune_to_macs(create("resnet20").eval(), get_criterion("l1"), (1, 28, 28),
                             PruneConfig(target_macs=0.3))
    save(model, tmp_path / "m.safetensors")
    torch.save(_outputs(model), tmp_path / "expected.pt")
    code = (
        "import torch, entroprune\n"
        f"m = entroprune.load({str(tmp_path / 'm.safetensors')!r})\n"
        "x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))\n"
        f"exp = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "with torch.no_grad(): assert torch.equal(m(x), exp)\n"
        "print('identical')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "identical" in out.stdout


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save(create("lenet5"), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load(path)


def test_foreign_files_are_clear_errors(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="not an entroprune model file"):
        load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"hello, this is not a model")
    with pytest.raises(ModelFileError, match="not a readable"):
        load(tmp_path / "junk.safetensors")
    with pytest.raises(ModelFileError, match="does not exist"):
        load(tmp_path / "missing.safetensors")


def test_model_without_recipe_cannot_be_saved(tmp_path):
    with pytest.raises(ModelFileError, match="factory="):
        save(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "m.safetensors")


def test_user_factory_round_trip(tmp_path):
    model = create("lenet5", num_classes=4)
    del model.entroprune_arch
    path = save(model, tmp_path / "m.safetensors", factory="entroprune.models.lenet:lenet5",
                factory_kwargs={"num_classes": 4})
    assert torch.equal(_outputs(model), _outputs(load(path)))


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(tmp_path):
    model = create("lenet5")
    with torch.no_grad():
        model.features[3].bias[:2] = float("nan")             # first in the order of layers ...
        model.classifier[1].weight[0, 0] = float("inf")       # ... though "classifier" sorts first
    path = tmp_path / "m.safetensors"
    with pytest.raises(ModelFileError, match=r"refusing to save .*first features\.3\.bias \(2 NaN of 16 values\)"):
        save(model, path)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    save(model, path, allow_nonfinite=True)                   # a repair tool may write it ...
    with pytest.raises(ModelFileError, match=r"m\.safetensors holds non-finite weights, first features\.3\.bias"):
        load(path)
    again = load(path, allow_nonfinite=True)                  # ... and read it back, as it is
    assert torch.isinf(again.classifier[1].weight[0, 0]) and torch.isnan(again.features[3].bias[:2]).all()


def test_damaged_metadata_is_a_clear_error(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m.safetensors"), metadata={"entroprune": "{not json"})
    with pytest.raises(ModelFileError, match="metadata is not JSON"):
        load(tmp_path / "m.safetensors")
