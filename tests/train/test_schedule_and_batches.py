import torch

from uld.train.distributed import Context, batch_indices, flip_draws, resize_ratio
from uld.train.loop import StepBatches
from uld.train.schedule import learning_rate


def test_warmup_then_constant():
    assert learning_rate(0, 0.02, 100) == 0.002
    assert abs(learning_rate(50, 0.02, 100) - 0.011) < 1e-12
    assert learning_rate(100, 0.02, 100) == 0.02
    assert learning_rate(10**6, 0.02, 100) == 0.02


def test_batches_are_a_pure_function_of_the_step():
    a = [batch_indices(s, 10, 4, seed=1) for s in range(10)]
    b = [batch_indices(s, 10, 4, seed=1) for s in range(10)]
    assert a == b
    flat = [i for batch in a[:5] for i in batch]  # 20 samples = two epochs
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert a != [batch_indices(s, 10, 4, seed=2) for s in range(10)]


def test_ranks_share_the_global_batch():
    step = 3
    whole = batch_indices(step, 50, 8, seed=0)
    parts = [batch_indices(step, 50, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    assert parts[0] + parts[1] == whole


def test_held_back_items_join_the_batches_at_their_step():
    # items 0-2 are the key slices, 3-9 their neighbours, which join from step 6
    ctx = Context(rank=0, world_size=1, device=torch.device("cpu"))
    batches = list(StepBatches(4, 20, 10, 3, seed=0, ctx=ctx, early_size=3, all_from=6))
    assert batches[:2] == [batch_indices(s, 3, 3, seed=0) for s in (4, 5)]
    assert all(i < 3 for batch in batches[:2] for i in batch)
    assert batches[2:] == [batch_indices(s, 10, 3, seed=0) for s in range(6, 20)]
    assert max(i for batch in batches[2:] for i in batch) >= 3


def test_resize_ratio_in_range_and_reproducible():
    ratios = [resize_ratio(s, 0, 0.8, 1.2) for s in range(50)]
    assert all(0.8 <= r <= 1.2 for r in ratios)
    assert ratios == [resize_ratio(s, 0, 0.8, 1.2) for s in range(50)]
    assert resize_ratio(5, 0, 1.0, 1.0) == 1.0


def test_flip_draws_are_reproducible_and_follow_the_probability():
    draws = [d for s in range(500) for d in flip_draws(s, 0, 4, 0.5)]
    assert 0.4 < sum(draws) / len(draws) < 0.6
    assert draws == [d for s in range(500) for d in flip_draws(s, 0, 4, 0.5)]
    assert [flip_draws(s, 1, 4, 0.5) for s in range(8)] != [flip_draws(s, 0, 4, 0.5) for s in range(8)]
    assert flip_draws(3, 0, 4, 0.0) == [False] * 4 and flip_draws(3, 0, 4, 1.0) == [True] * 4


def test_step_decay_multiplies_by_gamma_at_each_fraction_after_warm_up():
    kw = dict(schedule="step", iterations=1000, decay_at=(0.5, 0.9), gamma=0.1)
    assert learning_rate(0, 0.02, 100, **kw) == 0.002
    assert learning_rate(499, 0.02, 100, **kw) == 0.02
    assert abs(learning_rate(500, 0.02, 100, **kw) - 0.002) < 1e-15
    assert abs(learning_rate(900, 0.02, 100, **kw) - 0.0002) < 1e-15
    assert learning_rate(900, 0.02, 100, schedule="constant", iterations=1000) == 0.02


def test_schedule_and_tau_are_checked_in_the_config():
    import pytest

    from uld.config import ConfigError, load_config

    config = load_config(None, ["train.lr_schedule=step", "mining.tau=0.85",
                                "mining.policy=ignore", "mining.regress_mined=false"])
    assert (config.train.lr_schedule, config.mining.tau) == ("step", 0.85)
    with pytest.raises(ConfigError, match="mining.tau = 1.5"):
        load_config(None, ["mining.tau=1.5"])
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(None, ["train.lr_schedule=cosine"])


def test_build_optimizer_kinds_and_frozen_parameters():
    import pytest
    import torch

    from uld.train.schedule import build_optimizer

    net = torch.nn.Linear(3, 2)
    net.bias.requires_grad_(False)
    sgd = build_optimizer(net.parameters(), "sgd", 0.1, 0.9, 1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    assert len(sgd.param_groups[0]["params"]) == 1  # the frozen bias is left out
    adamw = build_optimizer(net.parameters(), "adamw", 1e-3, 0.9, 0.05)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        build_optimizer(net.parameters(), "adam", 1e-3, 0.9, 0.0)
