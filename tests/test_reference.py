"""Reference memory bank on constructed embeddings: position-aware kNN and calibration."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clipsam_ros.localize.reference import MemoryBank, build_bank, distance_map, spatial_knn_distance
from clipsam_ros.models.features import SamEmbedding


def grid_of(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, dim=-1)


def test_a_patch_that_is_normal_only_elsewhere_is_anomalous_here():
    torch.manual_seed(0)
    normal = grid_of(torch.randn(6, 8, 16)).repeat(2, 1, 1, 1)       # two identical good parts
    frame = normal[0].clone()
    frame[1, 1] = normal[0, 4, 6]                                     # belt where the ring should be
    bank = MemoryBank(normal, 1.0, "lite_medsam", 1)
    local = distance_map(frame, bank, k=1, radius=1, max_patches=10_000)
    anywhere = distance_map(frame, bank, k=1, radius=-1, max_patches=10_000)
    assert local[1, 1] > 0.3 and anywhere[1, 1] < 1e-5
    untouched = torch.ones_like(local, dtype=torch.bool)
    untouched[1, 1] = False
    assert local[untouched].abs().max() < 1e-5                        # identical cells: distance 0


def test_spatial_search_looks_exactly_radius_cells_away():
    torch.manual_seed(1)
    bank_grid = grid_of(torch.randn(1, 5, 5, 8))
    query = -bank_grid[0].clone()                                     # every cell dissimilar at home
    query[2, 2] = bank_grid[0, 0, 4]                                  # matches a cell 2 rows, 2 cols away
    assert spatial_knn_distance(query, bank_grid, 1, radius=1)[2, 2] > 1e-3
    assert spatial_knn_distance(query, bank_grid, 1, radius=2)[2, 2] < 1e-5


def test_calibration_is_leave_one_out_on_the_good_parts():
    torch.manual_seed(2)
    grids = [grid_of(torch.randn(4, 4, 8)) for _ in range(3)]
    it = iter(grids)

    def encode(_):
        grid = next(it)
        feats = torch.zeros(1, 8, 16, 16)
        feats[0, :, :4, :4] = grid.permute(2, 0, 1)
        return SamEmbedding(feats, original_size=(64, 64), input_size=(64, 64), img_size=256)

    bank = build_bank([None] * 3, encode, "lite_medsam", spatial_radius=0, max_patches=100, progress=False)
    assert bank.grids.shape == (3, 4, 4, 8)
    # radius 0, random unit vectors: every leave-one-out distance is large, and so is its quantile
    expected = torch.cat([(1 - (grids[i] * torch.stack([g for j, g in enumerate(grids) if j != i]))
                           .sum(-1).max(dim=0).values).flatten() for i in range(3)])
    assert abs(bank.normal_distance - float(torch.quantile(expected, 0.995))) < 1e-5
