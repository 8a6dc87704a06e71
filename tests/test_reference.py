"""Reference memory bank on constructed embeddings: position-aware kNN and calibration."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clipsam_ros.localize.reference import (
    MemoryBank,
    build_bank,
    distance_map,
    greedy_coreset,
    grid_positions,
    sam_grid,
    spatial_knn_distance,
)
from clipsam_ros.models.features import SamEmbedding


def grid_of(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, dim=-1)


def bank_of(grids: torch.Tensor, radius: int) -> MemoryBank:
    n, rows, cols, channels = grids.shape
    return MemoryBank(grids.reshape(-1, channels), grid_positions(rows, cols).repeat(n, 1),
                      torch.arange(n).repeat_interleave(rows * cols), (rows, cols), 1.0, "sam:lite_medsam",
                      "sam", radius)


def test_a_patch_that_is_normal_only_elsewhere_is_anomalous_here():
    torch.manual_seed(0)
    normal = grid_of(torch.randn(6, 8, 16)).repeat(2, 1, 1, 1)       # two identical good parts
    frame = normal[0].clone()
    frame[1, 1] = normal[0, 4, 6]                                     # belt where the ring should be
    bank = bank_of(normal, 1)
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
        return sam_grid(SamEmbedding(feats, original_size=(64, 64), input_size=(64, 64), img_size=256))

    bank = build_bank([None] * 3, encode, "sam:lite_medsam", "sam", spatial_radius=0, progress=False)
    assert bank.patches.shape == (3 * 16, 8) and bank.grid == (4, 4)
    # radius 0, random unit vectors: every leave-one-out distance is large, and so is its quantile
    expected = torch.cat([(1 - (grids[i] * torch.stack([g for j, g in enumerate(grids) if j != i]))
                           .sum(-1).max(dim=0).values).flatten() for i in range(3)])
    assert abs(bank.normal_distance - float(torch.quantile(expected, 0.995))) < 1e-5


def test_greedy_coreset_covers_the_full_bank_within_its_radius_better_than_chance():
    torch.manual_seed(3)
    # clustered patches, as real parts give: 40 clusters of 50 in 256 dims (projection on)
    centres = torch.randn(40, 256)
    x = grid_of((centres[:, None] + 0.15 * torch.randn(40, 50, 256)).reshape(-1, 256))
    keep, radius = greedy_coreset(x, 100)
    assert len(set(keep.tolist())) == 100
    nearest = torch.cdist(x, x[keep]).min(dim=1).values
    assert float(nearest.max()) <= radius + 1e-5                      # the bound it claims holds
    assert float(nearest.max()) >= radius - 1e-5                     # and is tight (it is the max)
    # k-center covers far better than a random subset of the same size (which misses clusters)
    random = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:100]
    assert radius < 0.8 * float(torch.cdist(x, x[random]).min(dim=1).values.max())
    # a larger coreset never covers worse
    assert greedy_coreset(x, 400)[1] <= radius


def test_greedy_coreset_picks_what_the_plain_farthest_point_rule_picks():
    """The squared-norm expansion selects as the textbook loop over explicit distances does."""
    torch.manual_seed(5)
    x = grid_of(torch.randn(600, 64))                                    # no projection below 128 dims
    keep, radius = greedy_coreset(x, 60)
    first = int(keep[0])
    chosen, nearest = [first], (x - x[first]).norm(dim=1)
    for _ in range(59):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, (x - x[i]).norm(dim=1))
    assert keep.tolist() == chosen
    assert abs(radius - float(nearest.max())) < 1e-5


def test_calibration_with_one_good_image_leaves_out_the_patch_itself():
    torch.manual_seed(4)
    grid = grid_of(torch.randn(4, 4, 8))
    bank = build_bank([None], lambda _: grid, "sam:lite_medsam", "sam", spatial_radius=-1, progress=False)
    assert bank.normal_distance > 0.2                                 # not 0: the patch did not find itself


def test_the_neighbourhood_search_gives_the_full_search_distances():
    from clipsam_ros.localize.reference import distance_map, knn_distance

    torch.manual_seed(0)
    grids = grid_of(torch.randn(5, 7, 9, 16))
    query = grid_of(torch.randn(7, 9, 16))
    for radius in (0, 1, 3):
        bank = bank_of(grids, radius)
        for k in (1, 3):
            index = bank.neighbours(radius, k)
            assert index is not None and index.shape[1] == 5 * (2 * radius + 1) ** 2   # N images x window
            full = knn_distance(query, bank.patches, bank.positions, k, radius)
            assert torch.allclose(distance_map(query, bank, k, radius, 10_000), full, atol=1e-5)
    # a coreset that leaves a cell fewer than k neighbours: the full search, which looks anywhere there
    sparse = bank_of(grids, 0)
    keep = (sparse.positions[:, 0] != 3) | (sparse.sources == 0)         # cells of row 3: one image left
    sparse = MemoryBank(sparse.patches[keep], sparse.positions[keep], sparse.sources[keep], (7, 9), 1.0,
                        "sam:lite_medsam", "sam", 0)
    assert sparse.neighbours(0, 1) is not None and sparse.neighbours(0, 2) is None
    assert torch.allclose(distance_map(query, sparse, 2, 0, 10_000),
                          knn_distance(query, sparse.patches, sparse.positions, 2, 0), atol=1e-5)
