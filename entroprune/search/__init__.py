"""AMC-style reinforcement-learning search of per-layer sparsity (Y. He et al.,
arXiv 1802.03494) with the spatial-entropy reward of B. Musat, R. Andonie,
arXiv 2312.04918 (METHODS.md section 3).

- ``env.py``: ``PruningEnv``, one episode = one pass over the channel groups;
- ``rewards.py``: ``entropy``, ``mass_entropy``, ``accuracy``, ``accuracy_flops``;
- ``agent.py``: ``DDPGAgent`` with AMC's settings;
- ``runner.py``: ``run_search`` (logging, checkpoint/resume) and
  ``score_random_policies`` (entropy vs accuracy reward of random policies).
"""

from .agent import DDPGAgent, DDPGConfig
from .env import OBS_FEATURES, EnvConfig, PruningEnv
from .rewards import REWARDS, RewardConfig, make_reward, network_entropy, register_reward
from .runner import SearchConfig, SearchResult, make_env, run_search, score_random_policies

__all__ = ["OBS_FEATURES", "REWARDS", "DDPGAgent", "DDPGConfig", "EnvConfig", "PruningEnv", "RewardConfig",
           "SearchConfig", "SearchResult", "make_env", "make_reward", "network_entropy", "register_reward",
           "run_search", "score_random_policies"]
