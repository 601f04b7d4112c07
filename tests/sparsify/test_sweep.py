"""The sweep's configurations: one value swept, everything else as given."""

import pytest

from entroprune.sparsify import EntropicConfig, SparsifyConfig
from entroprune.sparsify.sweep import sweep_configs


def test_eps_e_sweep_changes_only_eps_e():
    base = SparsifyConfig(solver=EntropicConfig(eps_e=0.003, ridge=0.7), target=0.25, seed=4)
    got = sweep_configs(base, "eps_e", [0.1, 0.01])
    assert [c.solver.eps_e for c in got] == [0.1, 0.01]
    assert all(c.solver.ridge == 0.7 and c.target == 0.25 and c.seed == 4 for c in got)
    assert base.solver.eps_e == 0.003                                  # the caller's config is untouched


def test_target_sweep_and_unknown_axis():
    got = sweep_configs(SparsifyConfig(), "target", [0.2, 0.5])
    assert [c.target for c in got] == [0.2, 0.5]
    with pytest.raises(ValueError, match="eps_e, target"):
        sweep_configs(SparsifyConfig(), "ridge", [1.0])
