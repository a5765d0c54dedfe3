"""The teacher-score diagnostic: labeled, unlabeled and background scores of training slices."""

import math

import torch

from uld.mining.diagnostics import score_profile


def test_scores_split_into_labeled_unlabeled_and_background():
    truth = torch.tensor([[10.0, 10, 20, 20], [40, 40, 50, 50], [70, 70, 80, 80]])
    known = truth[:1]
    boxes = torch.tensor([[10.0, 10, 20, 20],   # labeled lesion, 0.95
                          [11.0, 10, 21, 20],   # same lesion, lower score: not the best
                          [40.0, 40, 50, 51],   # unlabeled lesion, 0.6
                          [100, 100, 110, 110],  # background, 0.92
                          [42.0, 42, 55, 55]])  # partly on a lesion (IoU 0.1-0.5): neither
    scores = torch.tensor([0.95, 0.5, 0.6, 0.92, 0.3])
    empty_slice = (torch.tensor([[1.0, 1, 5, 5]]), torch.tensor([0.97]), torch.zeros((0, 4)),
                   torch.zeros((0, 4)))
    p = score_profile([boxes, empty_slice[0]], [scores, empty_slice[1]], [known, empty_slice[2]],
                      [truth, empty_slice[3]])
    assert torch.allclose(p.labeled, torch.tensor([0.95]))
    assert torch.allclose(p.unlabeled, torch.tensor([0.6, 0.0]))  # the third lesion: missed
    assert torch.allclose(p.background.sort().values, torch.tensor([0.92, 0.97]))
    s = p.scalars(tau=0.9)
    assert s["scores/labeled_at_tau"] == 1.0 and s["scores/unlabeled_at_tau"] == 0.0
    assert s["scores/background_at_tau_per_slice"] == 1.0  # two boxes >= 0.9 on two slices
    assert math.isclose(s["scores/background_top_mean"], (0.97 + 0.92) / 2, rel_tol=1e-6)


def test_no_predictions_and_no_lesions():
    p = score_profile([torch.zeros((0, 4))], [torch.zeros(0)], [torch.zeros((0, 4))],
                      [torch.tensor([[1.0, 1, 9, 9]])])
    assert p.labeled.numel() == 0 and p.unlabeled.tolist() == [0.0] and p.background.numel() == 0
    s = p.scalars(0.9)
    assert math.isnan(s["scores/labeled_mean"]) and math.isnan(s["scores/background_top_mean"])
