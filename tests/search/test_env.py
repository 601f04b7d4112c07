"""The pruning environment: observations, the action wall, residual groups,
and the structural application of a policy (random weights are enough)."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn

import entroprune
from entroprune.measure import count_macs
from entroprune.pruning.policy import PolicyPruner, apply_policy
from entroprune.pruning.structural import PruningError
from entroprune.search import OBS_FEATURES, EnvConfig, PruningEnv

SHAPE = (1, 28, 28)


def make_env(name: str, **kw) -> PruningEnv:
    return PruningEnv(entroprune.create(name), SHAPE, None, EnvConfig(**kw))


def test_observations_have_amc_features_in_unit_interval():
    env = make_env("resnet20", target_macs=0.5)
    obs, _ = env.reset()
    assert obs.shape == (len(OBS_FEATURES),) == env.observation_space.shape
    seen = [obs]
    rng = np.random.default_rng(0)
    done = False
    while not done:
        obs, reward, done, _, info = env.step([rng.uniform(0.2, 1.0)])
        seen.append(obs)
        assert env.observation_space.contains(obs)
    seen = np.stack(seen)                                   # (T + 1, 10)
    assert seen.min() >= 0.0 and seen.max() <= 1.0
    first = seen[0]
    assert first[0] == 0.0 and seen[env.n_steps - 1][0] == 1.0   # index, min-max normalised
    assert first[OBS_FEATURES.index("macs_removed")] == 0.0
    assert first[OBS_FEATURES.index("previous_action")] == 1.0
    # MACs removed grow along the episode and "to come" shrink
    removed = seen[:-1, OBS_FEATURES.index("macs_removed")]
    assert np.all(np.diff(removed) >= -1e-7) and removed[-1] > 0
    assert seen[-2, OBS_FEATURES.index("macs_to_come")] == 0.0
    assert reward == 0.0 and len(info["policy"]) == env.n_steps


@pytest.mark.parametrize("name", ["resnet20", "vgg_small"])
@pytest.mark.parametrize("target", [0.2, 0.5])
def test_action_wall_meets_the_target_for_random_actions(name, target):
    env = make_env(name, target_macs=target)
    rng = np.random.default_rng(1)
    for _ in range(4):
        info = env.play(rng.uniform(0.2, 1.0, env.n_steps).tolist())
        measured = count_macs(env.last_pruned, SHAPE) / env.macs_before
        assert measured == pytest.approx(info["macs_fraction"])
        assert abs(measured / target - 1) < 0.02, info
        assert abs(info["macs_gap"]) < 1e-9               # analytic MACs are exact
        assert min(info["policy"]) >= 0.2 - 1e-9
    # extreme proposals too: everything kept, everything at the bound
    for ratio in (1.0, 0.2):
        info = env.play([ratio] * env.n_steps)
        assert abs(info["macs_fraction"] / target - 1) < 0.02


def test_upper_wall_stays_at_or_below_the_target_and_rounding_holds():
    env = make_env("vgg_small", target_macs=0.4, wall="upper", round_to=8)
    rng = np.random.default_rng(2)
    for _ in range(3):
        info = env.play(rng.uniform(0.2, 1.0, env.n_steps).tolist())
        assert info["macs_fraction"] <= 0.4 + 1e-9
        assert all(c % 8 == 0 for c in info["channels"])
    info = env.play([0.2] * env.n_steps)                    # AMC's wall allows ending below the target
    assert info["macs_fraction"] < 0.3


def test_residual_groups_share_one_action():
    env = make_env("resnet20", target_macs=0.5)
    stem = env.groups[0]
    assert stem.layer == "conv1"
    assert {"layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(stem.out_layers)
    stage2 = next(g for g in env.groups if "layer2.0.shortcut.0" in g.out_layers)
    assert {"layer2.0.conv2", "layer2.1.conv2", "layer2.2.conv2"} <= set(stage2.out_layers)
    assert len(env.groups) == 12                            # 9 block-internal + 3 residual stages
    info = env.play([0.5] * env.n_steps)
    model = env.last_pruned
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert len({widths[n] for n in stem.out_layers}) == 1 == len({widths[n] for n in stage2.out_layers})
    assert widths["conv1"] == info["channels"][0]


def test_apply_policy_keeps_the_highest_scored_channels():
    model = entroprune.create("vgg_small")
    pruner = PolicyPruner(model, SHAPE, "l1")
    ratios = [0.5] * len(pruner.groups)
    pruned, report = apply_policy(model, SHAPE, ratios)
    first = pruned.get_submodule(pruner.groups[0].layer)
    keep = sorted(np.argsort(-pruner.scores[0].numpy(), kind="stable")[: first.out_channels].tolist())
    full = model.get_submodule(pruner.groups[0].layer).weight.detach()
    assert first.weight.detach().equal(full[keep])
    assert report["macs_fraction_analytic"] == pytest.approx(count_macs(pruned, SHAPE) / count_macs(model, SHAPE))
    assert pruned.entroprune_history[-1]["op"] == "prune_policy"


def test_unreachable_target_is_a_clear_error():
    with pytest.raises(PruningError, match="lbound"):
        make_env("lenet5", target_macs=0.01)


def test_spread_wall_caps_each_group_at_its_share_and_meets_the_target():
    env = make_env("vgg_small", target_macs=0.2, wall="spread")
    greedy = make_env("vgg_small", target_macs=0.2, wall="both")
    info = env.play([1.0] * env.n_steps)                 # every group asks to keep everything
    both = greedy.play([1.0] * greedy.n_steps)
    assert abs(info["macs_fraction"] / 0.2 - 1) < 0.02 and abs(both["macs_fraction"] / 0.2 - 1) < 0.02
    # "both" lets the first groups keep everything and forces the last ones to the lower bound;
    # "spread" gives each group at most its share, so the policy is nearly uniform
    assert both["policy"][0] == 1.0 and both["policy"][-1] == pytest.approx(env.min_keep[-1])
    assert max(info["policy"]) - min(info["policy"]) < 0.1
    # budget a group leaves unused goes to the groups after it
    low_first = env.play([0.2] + [1.0] * (env.n_steps - 1))
    assert low_first["policy"][0] == pytest.approx(env.min_keep[0])
    assert low_first["policy"][-1] > info["policy"][-1]


def test_reward_is_computed_on_the_reconstructed_model(fmnist):
    from entroprune.reconstruct import ReconstructConfig, Reconstructor
    from entroprune.training import evaluate

    model = entroprune.load(entroprune.pretrained_path("vgg_small"))
    x, y = fmnist.val_x[:500], fmnist.val_y[:500]

    def accuracy(pruned, macs):
        return evaluate(pruned, x, y)

    cfg = EnvConfig(target_macs=0.2)
    raw = PruningEnv(model, SHAPE, accuracy, cfg)
    rec = PruningEnv(model, SHAPE, accuracy, cfg, pruner=raw.pruner,
                     reconstructor=Reconstructor(model, fmnist.calibration(256, 0), ReconstructConfig(positions=4096)))
    uniform = [raw.pruner.uniform_ratio(0.2)] * raw.n_steps
    a, b = raw.play(uniform), rec.play(uniform)
    assert a["channels"] == b["channels"]                # the same policy ...
    assert a["reward"] < 20 and b["reward"] > 80          # ... scored at chance raw, usable reconstructed
    assert b["reconstruct_seconds"] > 0 and a["reconstruct_seconds"] == 0
