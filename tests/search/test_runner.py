"""The search loop on the shipped LeNet-5 and the real Fashion-MNIST: a killed
search resumes to the same result as an uninterrupted one."""

from __future__ import annotations

import json

import pytest

import entroprune
from entroprune.search import DDPGConfig, RewardConfig, SearchConfig, run_search, score_random_policies
from entroprune.training import evaluate


def _config(**kw) -> SearchConfig:
    base = dict(target_macs=0.5, episodes=12, checkpoint_every=4, top_k=2, progress=False,
                rewards=RewardConfig(calib_size=64), agent=DDPGConfig(warmup=6, batch_size=16))
    base.update(kw)
    return SearchConfig(**base)


def _log(folder) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "search_log.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
        r.pop("reconstruct_seconds")
    return rows


class Killed(RuntimeError):
    pass


def test_killed_search_resumes_to_the_same_result(tmp_path, fmnist_small):
    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    whole = run_search(model, fmnist_small, _config(), tmp_path / "whole")

    def kill_after_9(episode, record):
        if episode == 9:               # after the checkpoint of episode 8, mid-way through learning
            raise Killed

    with pytest.raises(Killed):
        run_search(model, fmnist_small, _config(), tmp_path / "resumed", on_episode=kill_after_9)
    assert len(_log(tmp_path / "resumed")) == 10
    resumed = run_search(model, fmnist_small, _config(), tmp_path / "resumed")

    assert _log(tmp_path / "resumed") == _log(tmp_path / "whole")
    def timeless(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "reconstruct_seconds")} for r in rows]

    assert timeless(resumed.top) == timeless(whole.top) and resumed.best["episode"] == whole.best["episode"]
    for name in ("best_policy.json",):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    log = _log(tmp_path / "whole")
    assert [r["warmup"] for r in log] == [True] * 6 + [False] * 6
    assert all("critic_loss" in r for r in log[6:])
    assert all(abs(r["macs_fraction"] / 0.5 - 1) < 0.02 for r in log)
    best = json.loads((tmp_path / "whole" / "best_policy.json").read_text())
    assert best["groups"] == ["features.0", "features.3", "classifier.1", "classifier.3"]
    assert best["reward"] == max(r["reward"] for r in log)
    # the reported accuracy is the best policy's model (reconstructed as in the search), measured again
    assert best["val_acc"] == evaluate(whole.best_model(), fmnist_small.val_x, fmnist_small.val_y)
    raw = [json.loads(line) for line in (tmp_path / "whole" / "search_log.jsonl").read_text().splitlines()]
    assert all(r["reconstruct_seconds"] > 0 for r in raw)       # every episode's model was reconstructed
    for png in ("search_rewards.png", "search_policy.png"):
        assert (tmp_path / "whole" / png).read_bytes()[:4] == b"\x89PNG"
    # a different search refuses the folder instead of mixing the two
    with pytest.raises(ValueError, match="other settings"):
        run_search(model, fmnist_small, _config(seed=1), tmp_path / "whole")


def test_random_policies_get_entropy_and_accuracy_rewards(fmnist_small):
    model = entroprune.load(entroprune.pretrained_path("lenet5"))
    rows = score_random_policies(model, fmnist_small, 0.4, n=3, seed=0,
                                 rewards=RewardConfig(calib_size=64, val_subset=500), keep_models=True)
    assert len(rows) == 3 and len({tuple(r["channels"]) for r in rows}) == 3
    val_x, val_y = fmnist_small.val_x[:500], fmnist_small.val_y[:500]
    for r in rows:
        assert abs(r["macs_fraction"] / 0.4 - 1) < 0.02
        assert r["entropy_reward"] != pytest.approx(-1.0)      # the unpruned model's reward is exactly -1
        assert r["accuracy_reward"] == pytest.approx(evaluate(r["model"], val_x, val_y) / 100 - 1)
    again = score_random_policies(model, fmnist_small, 0.4, policies=[r["proposed"] for r in rows],
                                  rewards=RewardConfig(calib_size=64, val_subset=500))
    assert [r["entropy_reward"] for r in again] == [r["entropy_reward"] for r in rows]
