"""Tests for lbnb.learning_bias: trajectories, separation, patch-set distances against brute force."""
import numpy as np
import pandas as pd
import pytest
import torch

from lbnb.filtering import ScoreMatrix
from lbnb.learning_bias import (disagreement, loss_separation, loss_trajectories, nearest_image_distances,
                                pair_distances, patch_set_distances)


def test_trajectories_and_separation():
    history = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.4, 0.9, 0.6], [0.2, 0.1, 0.8, 0.3]])
    labels = np.array([0, 0, 1, 0])
    traj = loss_trajectories(history, [0, 10, 20], labels)
    assert len(traj) == 12 and set(traj.kind) == {"normal", "contaminated"}
    assert traj[(traj.iteration == 10) & (traj.image == 2)].loss.item() == 0.9
    sep = loss_separation(history, [0, 10, 20], labels)
    assert sep.auroc.tolist() == [0.5, 1.0, 1.0]
    assert sep.gap.iloc[-1] == pytest.approx(0.8 / 0.2)
    with pytest.raises(ValueError, match="both"):
        loss_separation(history, [0, 10, 20], np.zeros(4))
    with pytest.raises(ValueError, match="disagree"):
        loss_trajectories(history, [0, 10], labels)


def test_patch_set_distances_match_brute_force():
    f = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    d = patch_set_distances(f, stride=1, images_per_chunk=2)
    p = f.permute(0, 2, 3, 1).reshape(5, 16, 3)
    for i in range(5):
        for j in range(5):
            ref = 0.0 if i == j else torch.cdist(p[i], p[j]).min(1).values.max().item()
            assert d[i, j] == pytest.approx(ref, abs=1e-4)
    nn = nearest_image_distances(d)
    assert nn[0] == pytest.approx(min(d[0, 1:]))
    pairs = pair_distances(d, np.array([0, 0, 1, 0, 1]))
    assert len(pairs) == 10 and pairs.pair.value_counts().to_dict() == {"normal–anomaly": 6, "normal–normal": 3,
                                                                        "anomaly–anomaly": 1}


def test_disagreement_columns():
    scores = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0], [3.0, 2.0, 7.0]])
    trained = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    m = ScoreMatrix(np.array(["a", "b", "c"]), scores, trained, np.array([0, 0, 1], np.int8))
    out = disagreement(m)
    assert isinstance(out, pd.DataFrame) and out.kind.tolist() == ["normal", "normal", "contaminated"]
    np.testing.assert_allclose(out["mean"], [2.5, 2.0, 4.0])
    np.testing.assert_allclose(out["variance"], [0.25, 0.0, 1.0])
