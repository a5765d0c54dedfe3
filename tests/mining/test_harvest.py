"""``mining.source=truth``: the perfect teacher that bounds what mining can recover."""

import pytest
import torch

from uld.config import MiningConfig
from uld.data.samples import Sample
from uld.mining.harvest import count_mining, mine_truth


def _sample(boxes, truth, complete=False) -> Sample:
    return Sample(image=torch.zeros(3, 32, 32), boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  truth=None if truth is None else torch.tensor(truth, dtype=torch.float32).reshape(-1, 4),
                  volume="v", z=3, complete=complete)


def test_mines_exactly_the_unlabeled_true_boxes():
    known = [[0, 0, 10, 10]]
    shifted = [1, 1, 11, 11]  # the known lesion's own truth box, a pixel off: GT NMS drops it
    unlabeled = [[20, 20, 28, 28], [2, 18, 9, 26]]
    batch = [_sample(known, [shifted, *unlabeled]), _sample([], unlabeled[:1])]
    mined = mine_truth(batch, MiningConfig(gt_nms_iou=0.3))
    assert torch.equal(mined[0][0], torch.tensor(unlabeled, dtype=torch.float32))
    assert torch.equal(mined[0][1], torch.ones(2))
    assert torch.equal(mined[1][0], torch.tensor(unlabeled[:1], dtype=torch.float32))
    counts = count_mining(batch, [b for b, _ in mined])
    assert (counts.mined, counts.true, counts.precision, counts.recall) == (3, 3, 1.0, 1.0)


def test_nothing_on_complete_slices_and_a_clear_error_without_truth():
    assert len(mine_truth([_sample([], [[0, 0, 5, 5]], complete=True)], MiningConfig())[0][0]) == 0
    with pytest.raises(ValueError, match="v z=3 has none"):
        mine_truth([_sample([], None)], MiningConfig())


def test_source_is_checked_in_the_config():
    with pytest.raises(Exception, match="mining.source"):
        MiningConfig(source="oracle")


def test_boxes_labeled_on_a_nearby_slice_are_neither_mined_nor_counted_as_missed():
    # an unlabeled neighbouring slice (data.unlabeled_neighbours): the lesion labeled two
    # slices away crosses it, and a second lesion there has no label anywhere
    nearby, other = [0, 0, 10, 10], [20, 20, 28, 28]
    sample = Sample(image=torch.zeros(3, 32, 32), boxes=torch.zeros((0, 4)),
                    truth=torch.tensor([[1, 1, 10, 10], other], dtype=torch.float32),
                    volume="v", z=5, nearby=torch.tensor([nearby], dtype=torch.float32))
    assert sample.known.tolist() == [nearby]
    mined = mine_truth([sample], MiningConfig(gt_nms_iou=0.3))
    assert mined[0][0].tolist() == [other]
    counts = count_mining([sample], [mined[0][0]])
    assert (counts.mined, counts.true, counts.recall) == (1, 1, 1.0)
