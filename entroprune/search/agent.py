"""DDPG agent as AMC configures it (Y. He et al., "AMC: AutoML for Model
Compression and Acceleration on Mobile Devices", ECCV 2018, arXiv 1802.03494;
DDPG: T. Lillicrap et al., arXiv 1509.02971; METHODS.md section 3).

- actor ``mu(s)``: state -> 300 -> 300 -> 1, sigmoid output (a preserve ratio);
  critic ``Q(s, a)``: [state, action] -> 300 -> 300 -> 1; lr 1e-4 / 1e-3;
  soft target updates with tau 0.01; batch 64; discount 1.
- ``warmup`` episodes of uniform random actions in ``[lbound, 1]``, then the
  actor's action plus truncated-normal exploration noise (truncated to
  ``[lbound, 1]``) whose sigma starts at 0.5 and decays by 0.95 per episode.
- the reward is 0 until the last step; the final reward minus a moving-average
  baseline of the final rewards is given to every transition of the episode,
  and each transition of a post-warm-up episode is followed by one update.

From stable-baselines3: the replay buffer's storage (its public arrays,
``add``, ``pos``, ``full``), the MLP builder and the soft update. Written here:
sampling a batch from those arrays, the AMC exploration schedule, the
episode-level reward with baseline, and a complete, resumable state
(``state_dict``). All randomness comes from one seeded ``numpy`` generator and
a seeded ``torch`` generator for the initial weights, so the same seed gives
the same episodes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.utils import polyak_update

_NORMAL = NormalDist()


@dataclass
class DDPGConfig:
    hidden: list[int] = field(default_factory=lambda: [300, 300])
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    discount: float = 1.0
    warmup: int = 100             # episodes of uniform random actions
    sigma: float = 0.5            # initial exploration noise
    sigma_decay: float = 0.95     # per episode after warm-up
    baseline_alpha: float = 0.5   # moving average of the final reward (AMC's moving_alpha)
    buffer_size: int = 10000      # transitions
    lbound: float = 0.2
    rbound: float = 1.0


def truncated_normal(rng: np.random.Generator, mu: float, sigma: float, lower: float, upper: float) -> float:
    """One draw of N(mu, sigma^2) truncated to [lower, upper] (inverse CDF)."""
    if sigma <= 0:
        return float(np.clip(mu, lower, upper))
    lo, hi = _NORMAL.cdf((lower - mu) / sigma), _NORMAL.cdf((upper - mu) / sigma)
    if hi - lo < 1e-12:  # the mean lies far outside: the nearer bound
        return float(np.clip(mu, lower, upper))
    u = lo + (hi - lo) * float(rng.random())
    u = min(max(u, 1e-12), 1 - 1e-12)
    return float(np.clip(mu + sigma * _NORMAL.inv_cdf(u), lower, upper))


class Critic(nn.Module):
    def __init__(self, obs_dim: int, hidden: list[int]):
        super().__init__()
        self.net = nn.Sequential(*create_mlp(obs_dim + 1, 1, hidden))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=1))                   # (B, 1)


class DDPGAgent:
    def __init__(self, obs_dim: int, cfg: DDPGConfig, seed: int = 0):
        self.cfg, self.obs_dim = cfg, obs_dim
        self.rng = np.random.default_rng(seed)
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
            torch.manual_seed(seed)
            self.actor = nn.Sequential(*create_mlp(obs_dim, 1, cfg.hidden), nn.Sigmoid())
            self.critic = Critic(obs_dim, cfg.hidden)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.buffer = ReplayBuffer(
            cfg.buffer_size, gym.spaces.Box(0.0, 1.0, (obs_dim,), np.float32),
            gym.spaces.Box(cfg.lbound, cfg.rbound, (1,), np.float32), device="cpu",
            handle_timeout_termination=False)
        self.baseline: float | None = None

    # ---- acting ----
    def sigma(self, episode: int) -> float:
        return self.cfg.sigma * self.cfg.sigma_decay ** max(0, episode - self.cfg.warmup)

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> float:
        out = self.actor(torch.as_tensor(obs, dtype=torch.float32).view(1, -1))  # (1, 1)
        return float(np.clip(out.item(), self.cfg.lbound, self.cfg.rbound))

    def act(self, obs: np.ndarray, episode: int) -> float:
        """Uniform random during warm-up, then the actor plus truncated-normal noise."""
        if episode < self.cfg.warmup:
            return float(self.rng.uniform(self.cfg.lbound, self.cfg.rbound))
        return truncated_normal(self.rng, self.greedy(obs), self.sigma(episode), self.cfg.lbound, self.cfg.rbound)

    # ---- learning ----
    def observe_episode(self, transitions: list[tuple[np.ndarray, float, np.ndarray, bool]],
                        final_reward: float, episode: int) -> dict[str, float]:
        """Store an episode's ``(obs, applied action, next obs, done)`` with the
        final reward minus the baseline; after warm-up, one update per transition."""
        if self.baseline is None:
            self.baseline = final_reward
        advantage = final_reward - self.baseline
        self.baseline += self.cfg.baseline_alpha * (final_reward - self.baseline)
        for obs, action, next_obs, done in transitions:
            self.buffer.add(np.asarray(obs), np.asarray(next_obs), np.asarray([action], dtype=np.float32),
                            np.asarray([advantage]), np.asarray([float(done)]), [{}])
        losses: list[dict[str, float]] = []
        if episode >= self.cfg.warmup:
            losses = [self.update() for _ in transitions]
        if not losses:
            return {"advantage": advantage}
        return {"advantage": advantage, "critic_loss": float(np.mean([x["critic_loss"] for x in losses])),
                "actor_loss": float(np.mean([x["actor_loss"] for x in losses]))}

    def sample(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Transitions ``idx`` (B,) of the buffer's single environment as float32
        tensors: observations (B, obs_dim), actions (B, 1), next observations
        (B, obs_dim), rewards (B, 1), dones (B, 1). Copies, so later writes to
        the buffer do not reach a batch; no timeouts are recorded
        (``handle_timeout_termination=False``), so ``dones`` are the episode ends."""
        b = self.buffer
        return tuple(torch.tensor(a) for a in (
            b.observations[idx, 0], b.actions[idx, 0], b.next_observations[idx, 0],
            b.rewards[idx, 0].reshape(-1, 1), b.dones[idx, 0].reshape(-1, 1)))

    def update(self) -> dict[str, float]:
        """One DDPG step on a batch drawn (with replacement) from the buffer."""
        size = self.buffer.buffer_size if self.buffer.full else self.buffer.pos
        if size == 0:
            raise RuntimeError("the replay buffer is empty")
        idx = self.rng.integers(0, size, self.cfg.batch_size)
        obs, actions, next_obs, rewards, dones = self.sample(idx)
        with torch.no_grad():
            next_q = self.critic_target(next_obs, self.actor_target(next_obs))
            target = rewards + self.cfg.discount * (1.0 - dones) * next_q                 # (B, 1)
        critic_loss = F.mse_loss(self.critic(obs, actions), target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -self.critic(obs, self.actor(obs)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.cfg.tau)
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.cfg.tau)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.detach().item()}

    # ---- checkpointing ----
    BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of everything the agent's future depends on."""
        return copy.deepcopy({
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "buffer": {k: torch.from_numpy(getattr(self.buffer, k).copy()) for k in self.BUFFER_ARRAYS},
            "buffer_pos": self.buffer.pos, "buffer_full": self.buffer.full,
            "rng": self.rng.bit_generator.state, "baseline": self.baseline,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        for k in self.BUFFER_ARRAYS:
            if getattr(self.buffer, k).shape != state["buffer"][k].shape:
                raise ValueError(f"replay buffer {k} has shape {state['buffer'][k].shape}, expected "
                                 f"{getattr(self.buffer, k).shape}: the checkpoint is from another search")
            setattr(self.buffer, k, state["buffer"][k].numpy().copy())
        self.buffer.pos, self.buffer.full = state["buffer_pos"], state["buffer_full"]
        self.rng.bit_generator.state = state["rng"]
        self.baseline = state["baseline"]
