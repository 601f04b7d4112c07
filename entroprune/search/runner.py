"""The search loop of an AMC-style per-layer sparsity search (Y. He et al.,
arXiv 1802.03494) with the entropy reward of B. Musat, R. Andonie, arXiv
2312.04918 (METHODS.md section 3): episodes of ``PruningEnv`` played by the
``DDPGAgent``, logged, checkpointed and resumable.

Files written into the search folder::

    search_log.jsonl    one line per episode: policy, channels, MACs fraction, reward
    search.ckpt         agent networks and optimisers, replay buffer, RNG states,
                        episode counter, baseline, best so far (atomic, every N episodes)
    best_policy.json    the best policy (and the uniform policy of the same MACs)
    search_result.json  the top-k policies with their validation accuracy
    search_rewards.png, search_policy.png

Rerunning a search on the same folder resumes after the last checkpoint (the
log is cut back to it) and ends with the same result as an uninterrupted run
of the same seed: all randomness lives in the agent's generators, which are
checkpointed with everything else.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from ..data import DataBundle
from ..errors import first_line
from ..io import atomic_torch_save, atomic_write_json, atomic_write_text
from ..pruning.policy import PolicyPruner
from ..pruning.structural import parse_macs_target
from ..reconstruct import ReconstructConfig, Reconstructor
from ..reporting.search_plots import plot_policy, plot_search
from ..training import evaluate
from .agent import DDPGAgent, DDPGConfig
from .env import OBS_FEATURES, EnvConfig, PruningEnv
from .rewards import AccuracyReward, EntropyReward, RewardConfig, make_reward

CHECKPOINT_FORMAT = 1
LOG, CHECKPOINT, BEST, RESULT = "search_log.jsonl", "search.ckpt", "best_policy.json", "search_result.json"


@dataclass
class SearchConfig:
    target_macs: float | str = 0.5     # fraction of the MACs (or of the cost) to keep, or "5x"
    episodes: int = 80
    reward: str = "entropy"            # entropy | mass_entropy | accuracy | accuracy_flops
    importance: str = "l1"             # channels removed inside a group: "l1" or "aura"
    lbound: float = 0.2
    round_to: int = 1
    wall: str = "both"
    top_k: int = 3                     # best policies whose validation accuracy is measured
    checkpoint_every: int = 10         # episodes
    seed: int = 0
    progress: bool = True
    rewards: RewardConfig = field(default_factory=RewardConfig)
    agent: DDPGConfig = field(default_factory=lambda: DDPGConfig(warmup=20))
    # every episode's model is reconstructed before its reward (None: scored raw, as before)
    reconstruct: ReconstructConfig | None = field(default_factory=lambda: ReconstructConfig(images=256,
                                                                                            positions=4096))

    def __post_init__(self) -> None:
        self.target_macs = parse_macs_target(self.target_macs)     # "5x" or a fraction to keep
        if self.episodes < 1 or self.top_k < 1 or self.checkpoint_every < 1:
            raise ValueError(f"episodes, top_k and checkpoint_every must be >= 1, got {self.episodes}, "
                             f"{self.top_k}, {self.checkpoint_every}")

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a checkpoint and its resumption."""
        d = asdict(self)
        for k in ("episodes", "top_k", "checkpoint_every", "progress"):
            d.pop(k)
        return d


@dataclass
class SearchResult:
    best: dict[str, Any]               # the best episode's record (+ val_acc)
    top: list[dict[str, Any]]          # top-k distinct policies by reward (+ val_acc)
    records: list[dict[str, Any]]      # every episode
    groups: list[str]                  # first layer of each group, in order
    uniform_preserve: float            # the uniform preserve ratio of the same MACs
    folder: Path
    env: PruningEnv

    def best_model(self) -> nn.Module:
        """The model pruned by the best policy (reconstructed as in the search, not fine-tuned)."""
        return self.env.apply(self.best["channels"])[0]


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _calibration(data: DataBundle, cfg: SearchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    images = data.calibration(cfg.rewards.calib_size, cfg.rewards.calib_seed)   # (n, C, H, W)
    return images, torch.zeros(len(images), dtype=torch.long)


def make_env(model: nn.Module, data: DataBundle, cfg: SearchConfig, with_reward: bool = True,
             cost_model: Any = None) -> PruningEnv:
    """The search's environment for ``model``; ``cost_model`` (``bind(pruner)`` ->
    cost of the kept fractions, ``allowed_counts(pruner, group)``; a latency cost)
    replaces MACs as the budget of the action wall."""
    shape = tuple(data.train_x.shape[1:])
    reward = make_reward(cfg.reward, model, data, cfg.rewards) if with_reward else None
    env_cfg = EnvConfig(target_macs=cfg.target_macs, lbound=cfg.lbound, round_to=cfg.round_to,
                        importance=cfg.importance, wall=cfg.wall)
    reconstructor = None
    if cfg.reconstruct is not None:   # calibration images of the training split, never the test set
        reconstructor = Reconstructor(model, data.calibration(cfg.reconstruct.images, cfg.seed), cfg.reconstruct)
    pruner = PolicyPruner(model, shape, cfg.importance, _calibration(data, cfg))
    cost_fn = cost_model.bind(pruner) if cost_model is not None else None
    allowed = None
    if cost_model is not None:        # the widths the cost model allows (a latency table's Pareto widths)
        allowed = [cost_model.allowed_counts(pruner, i) for i in range(len(pruner.groups))]
    return PruningEnv(model, shape, reward, env_cfg, pruner=pruner, reconstructor=reconstructor, cost_fn=cost_fn,
                      allowed=allowed)


def _save_checkpoint(path: Path, fingerprint: dict, episode: int, agent: DDPGAgent, best) -> None:
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "episode": episode,
                       "agent": agent.state_dict(), "best": best, "torch_rng": torch.get_rng_state(),
                       "numpy_rng": _numpy_state_out(), "python_rng": random.getstate()}, path)


# numpy's legacy RNG state as plain values and a tensor, so that the checkpoint loads with weights_only=True
def _numpy_state_out() -> tuple:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def _numpy_state_in(state: tuple) -> None:
    name, keys, pos, has_gauss, gauss = state
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))


def _resume(folder: Path, fingerprint: dict, agent: DDPGAgent) -> tuple[int, dict | None]:
    path = folder / CHECKPOINT
    if not path.exists():
        (folder / LOG).unlink(missing_ok=True)
        return 0, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)   # tensors and plain values only
    except Exception as e:  # cut short by a kill during a save, an older format, or not a checkpoint at all
        raise ValueError(f"search checkpoint {path} cannot be read ({first_line(e, 120)}); it is damaged or "
                         f"from an older entroprune: delete it (or the folder {folder}) to start the search "
                         "over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT \
            or state.get("fingerprint") != fingerprint:
        raise ValueError(f"{path} belongs to a search with other settings; delete the folder's "
                         "search files or choose another output folder")
    agent.load_state_dict(state["agent"])
    torch.set_rng_state(state["torch_rng"])
    _numpy_state_in(state["numpy_rng"])
    random.setstate(state["python_rng"])
    episode = state["episode"]
    lines = (folder / LOG).read_text().splitlines()[:episode] if (folder / LOG).exists() else []
    if len(lines) != episode:
        raise ValueError(f"{folder / LOG} has {len(lines)} episodes but the checkpoint {episode}; "
                         "the search folder is damaged, delete it to start over")
    atomic_write_text(folder / LOG, "".join(line + "\n" for line in lines))
    return episode, state["best"]


def _play_episode(env: PruningEnv, agent: DDPGAgent, episode: int) -> dict[str, Any]:
    t0 = time.time()
    obs, _ = env.reset()
    transitions, proposed, done = [], [], False
    while not done:
        action = agent.act(obs, episode)
        next_obs, reward, done, _, info = env.step([action])
        transitions.append((obs, info["action"], next_obs, done))
        proposed.append(action)
        obs = next_obs
    learning = agent.observe_episode(transitions, reward, episode)
    return {"episode": episode, "reward": reward, "macs_fraction": info["macs_fraction"],
            "macs_gap": info["macs_gap"], "target_error": info["target_error"],
            "cost_fraction": info["cost_fraction"], "reconstruct_seconds": info["reconstruct_seconds"],
            "policy": info["policy"], "channels": info["channels"], "proposed": proposed,
            "warmup": episode < agent.cfg.warmup,
            "sigma": None if episode < agent.cfg.warmup else agent.sigma(episode),
            **learning, "seconds": time.time() - t0}


def _top_policies(records: list[dict], k: int) -> list[dict]:
    seen, top = set(), []
    for r in sorted(records, key=lambda r: (-r["reward"], r["episode"])):
        key = tuple(r["channels"])
        if key not in seen:
            seen.add(key)
            top.append(dict(r))
        if len(top) >= k:
            break
    return top


def run_search(model: nn.Module, data: DataBundle, cfg: SearchConfig, folder: str | Path,
               on_episode: Callable[[int, dict[str, Any]], None] | None = None,
               cost_model: Any = None) -> SearchResult:
    """Search a per-group preserve-ratio policy for ``model`` (left untouched).
    ``cost_model`` (a latency cost) replaces the analytic MACs as the budget of
    the action wall (``cfg.target_macs`` is then a fraction of it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, agent=replace(cfg.agent, lbound=cfg.lbound))     # the caller's config stays as it was
    env = make_env(model, data, cfg, cost_model=cost_model)
    agent = DDPGAgent(len(OBS_FEATURES), cfg.agent, seed=cfg.seed)
    fingerprint = {**cfg.fingerprint(), "groups": [g.layer for g in env.groups], "macs": env.macs_before}
    start, best = _resume(folder, fingerprint, agent)
    bar = tqdm(range(start, cfg.episodes), initial=start, total=cfg.episodes, desc="search",
               disable=not cfg.progress)
    if best is not None:
        bar.set_postfix(best=f"{best['reward']:.4f}")
    for episode in bar:
        record = _play_episode(env, agent, episode)
        with open(folder / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        if best is None or record["reward"] > best["reward"]:
            best = record
        bar.set_postfix(best=f"{best['reward']:.4f}", macs=f"{record['macs_fraction']:.3f}")
        if (episode + 1) % max(1, cfg.checkpoint_every) == 0 or episode + 1 == cfg.episodes:
            _save_checkpoint(folder / CHECKPOINT, fingerprint, episode + 1, agent, best)
        if on_episode is not None:
            on_episode(episode, record)
    bar.close()
    return _finish(env, data, cfg, folder)


def _finish(env: PruningEnv, data: DataBundle, cfg: SearchConfig, folder: Path) -> SearchResult:
    records = _read_log(folder / LOG)
    if not records:
        raise ValueError("the search ran no episode (episodes must be >= 1)")
    top = _top_policies(records, max(1, cfg.top_k))
    for r in top:
        r["val_acc"] = evaluate(env.apply(r["channels"])[0], data.val_x, data.val_y)
    groups = [g.layer for g in env.groups]
    uniform = env.pruner.uniform_ratio(cfg.target_macs)
    best = top[0]
    atomic_write_json(folder / BEST, {
        "reward_name": cfg.reward, "importance": cfg.importance, "target_macs": cfg.target_macs,
        "groups": groups, "group_keys": [list(g.key) for g in env.groups],
        "channels": best["channels"], "preserve": best["policy"], "reward": best["reward"],
        "macs_fraction": best["macs_fraction"], "episode": best["episode"], "val_acc": best["val_acc"],
        "uniform_preserve": uniform})
    atomic_write_json(folder / RESULT, {"config": asdict(cfg), "groups": groups, "top": top,
                                        "episodes": len(records),
                                        "seconds_per_episode": float(np.mean([r["seconds"] for r in records]))})
    plot_search(records, cfg.target_macs, folder / "search_rewards.png",
                f"{cfg.reward} reward search, target {cfg.target_macs:.3f} of the MACs")
    plot_policy(groups, best["policy"], uniform, folder / "search_policy.png",
                f"best policy (episode {best['episode']}, reward {best['reward']:.4f}) vs uniform")
    return SearchResult(best=best, top=top, records=records, groups=groups, uniform_preserve=uniform,
                        folder=folder, env=env)


def score_random_policies(model: nn.Module, data: DataBundle, target_macs: float, n: int = 10,
                          policies: Sequence[Sequence[float]] | None = None, seed: int = 0,
                          importance: str = "l1", lbound: float = 0.2, round_to: int = 1,
                          rewards: RewardConfig | None = None, keep_models: bool = False,
                          reconstruct: ReconstructConfig | None = None) -> list[dict[str, Any]]:
    """For ``n`` random policies (or the given proposed ratios), each made to meet
    ``target_macs`` by the action wall: the entropy reward and the accuracy reward
    of the pruned (with ``reconstruct``: and reconstructed), not fine-tuned model.
    With ``keep_models`` each row also holds the pruned ``model`` (for a fine-tune
    and a rank correlation)."""
    cfg = SearchConfig(target_macs=target_macs, importance=importance, lbound=lbound, round_to=round_to,
                       rewards=rewards or RewardConfig(), reconstruct=reconstruct)
    env = make_env(model, data, cfg, with_reward=False)
    entropy_reward = make_reward("entropy", model, data, cfg.rewards)
    accuracy_reward = make_reward("accuracy", model, data, cfg.rewards)
    assert isinstance(entropy_reward, EntropyReward) and isinstance(accuracy_reward, AccuracyReward)
    if policies is None:
        rng = np.random.default_rng(seed)
        policies = [rng.uniform(lbound, 1.0, env.n_steps).tolist() for _ in range(n)]
    rows = []
    for proposed in policies:
        info = env.play(list(proposed))
        pruned = env.last_pruned
        row = {"proposed": list(proposed), "policy": info["policy"], "channels": info["channels"],
               "macs_fraction": info["macs_fraction"],
               "entropy_reward": entropy_reward(pruned, info["macs"]),
               "accuracy_reward": accuracy_reward(pruned, info["macs"])}
        if keep_models:
            row["model"] = pruned
        rows.append(row)
    return rows

