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


def test_batches_are_the_stored_transitions_drawn_by_the_agents_generator():
    agent = DDPGAgent(3, DDPGConfig(warmup=0, batch_size=4), seed=0)
    stored = []
    for i in range(6):                                  # transition i: obs (i, i, i), action 0.2 + i/10, reward -i
        obs, nxt = np.full(3, i, np.float32), np.full(3, i + 0.5, np.float32)
        agent.buffer.add(obs, nxt, np.array([0.2 + i / 10], np.float32), np.array([-float(i)]),
                         np.array([float(i == 5)]), [{}])
        stored.append((obs, 0.2 + i / 10, nxt, -float(i), float(i == 5)))
    idx = np.array([5, 0, 3, 3])
    obs, actions, next_obs, rewards, dones = agent.sample(idx)
    assert obs.shape == next_obs.shape == (4, 3) and actions.shape == rewards.shape == dones.shape == (4, 1)
    for row, i in enumerate(idx):
        o, a, n, r, d = stored[i]
        assert np.array_equal(obs[row].numpy(), o) and np.array_equal(next_obs[row].numpy(), n)
        assert actions[row, 0].item() == np.float32(a) and rewards[row, 0].item() == r and dones[row, 0].item() == d
    agent.buffer.observations[5] = -1.0                 # a batch is a copy
    assert obs[0, 0].item() == 5.0
    # the update draws its indices from the agent's seeded generator, nothing global
    state = np.random.get_state()
    twin = np.random.default_rng(0)
    twin.bit_generator.state = agent.rng.bit_generator.state
    agent.update()
    assert np.array_equal(np.random.get_state()[1], state[1])
    twin.integers(0, 6, 4)                              # the one draw an update makes: batch_size of 6 stored
    assert agent.rng.bit_generator.state == twin.bit_generator.state
