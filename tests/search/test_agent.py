"""The DDPG agent: learning on a toy problem, exploration, reproducibility."""

from __future__ import annotations

import numpy as np

from entroprune.search import DDPGAgent, DDPGConfig
from entroprune.search.agent import truncated_normal


def _toy_transitions(rng: np.random.Generator, n: int):
    """One-step episodes: reward -(a - s0)^2 peaks at the action equal to the first feature."""
    for _ in range(n):
        s = rng.uniform(0, 1, 4).astype(np.float32)
        a = float(rng.uniform(0.2, 1.0))
        yield s, a, -((a - s[0]) ** 2)


def test_ddpg_update_reduces_the_critic_loss_on_a_toy_problem():
    agent = DDPGAgent(4, DDPGConfig(warmup=0, batch_size=64), seed=0)
    rng = np.random.default_rng(0)
    for s, a, r in _toy_transitions(rng, 512):
        agent.buffer.add(s, s, np.array([a], np.float32), np.array([r]), np.array([1.0]), [{}])
    losses = [agent.update()["critic_loss"] for _ in range(300)]
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20])


def test_warmup_is_uniform_then_noise_is_truncated_and_decays():
    cfg = DDPGConfig(warmup=3, lbound=0.2)
    agent = DDPGAgent(10, cfg, seed=1)
    obs = np.full(10, 0.5, np.float32)
    warm = [agent.act(obs, 0) for _ in range(200)]
    assert 0.2 <= min(warm) and max(warm) <= 1.0 and np.std(warm) > 0.15
    assert agent.sigma(3) == 0.5 and agent.sigma(5) == 0.5 * 0.95 ** 2
    rng = np.random.default_rng(0)
    draws = [truncated_normal(rng, 0.9, 0.5, 0.2, 1.0) for _ in range(500)]
    assert min(draws) >= 0.2 and max(draws) <= 1.0 and np.mean(draws) > 0.6
    assert truncated_normal(rng, 5.0, 0.01, 0.2, 1.0) == 1.0


def test_same_seed_same_actions_and_state_round_trip():
    def run(agent: DDPGAgent) -> list[float]:
        obs = np.linspace(0, 1, 10).astype(np.float32)
        out = []
        for episode in range(4):
            transitions = []
            for t in range(3):
                a = agent.act(obs, episode)
                out.append(a)
                transitions.append((obs, a, obs, t == 2))
            agent.observe_episode(transitions, -a, episode)
        return out

    cfg = DDPGConfig(warmup=2, batch_size=8)
    a, b = DDPGAgent(10, cfg, seed=7), DDPGAgent(10, cfg, seed=7)
    assert run(a) == run(b)
    c = DDPGAgent(10, cfg, seed=99)
    c.load_state_dict(a.state_dict())
    assert run(c) == run(a)        # continuing from a copied state is identical
    assert a.baseline == c.baseline
