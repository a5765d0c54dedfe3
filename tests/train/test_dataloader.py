"""data.num_workers: -1 is what the machine allows; more than the cores is capped, warned."""

from __future__ import annotations

import pytest
import torch

from uld.config import config_from_dict, load_config, upgrade_saved_config
from uld.train.dataloader import MAX_AUTO_WORKERS, make_loader, worker_count


def test_auto_is_the_process_share_minus_one_or_none_with_cached_volumes() -> None:
    assert worker_count(-1, cache_volumes=True, cores=16) == 0
    assert worker_count(-1, cache_volumes=False, cores=16) == 15
    assert worker_count(-1, cache_volumes=False, cores=16, processes_per_node=4) == 3
    assert worker_count(-1, cache_volumes=False, cores=64) == MAX_AUTO_WORKERS
    assert worker_count(-1, cache_volumes=False, cores=1) == 0
    assert worker_count(3, cache_volumes=True, cores=16) == 3


def test_more_workers_than_cores_is_capped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"data.num_workers = 40 is more than the 8 cores .* using 8"):
        assert worker_count(40, cache_volumes=False, cores=8) == 8


def test_old_configs_keep_their_worker_count() -> None:
    config = config_from_dict(upgrade_saved_config({"train": {"num_workers": 2}}))
    assert config.data.num_workers == 2
    assert load_config("demo").data.num_workers == -1


def test_zero_workers_is_the_plain_loader() -> None:
    loader = make_loader(list(range(4)), [[0, 1], [2, 3]], list, 0, 2, torch.device("cpu"))
    assert loader.num_workers == 0 and not loader.pin_memory
    assert list(loader) == [[0, 1], [2, 3]]
