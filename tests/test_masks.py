import numpy as np
import pytest

from ppar_cli.core.clips import cell_edges, cell_index, pixel_mask
from ppar_cli.pipeline.fill import fill_clip, pruned_rects


@pytest.mark.parametrize("size,cells", [(201, 8), (333, 8), (480, 14), (7, 8), (1, 8), (1080, 7), (64, 8)])
def test_cells_partition_exactly(size, cells):
    idx = cell_index(size, cells)
    edges = cell_edges(size, cells)
    assert edges[0] == 0 and edges[-1] == size
    for r in range(cells):  # each cell is the contiguous run between its edges
        assert (idx[edges[r]:edges[r + 1]] == r).all()
    assert len(idx) == size and (np.diff(idx) >= 0).all()


def test_pixel_mask_portrait():
    grid = np.zeros((8, 8), bool)
    grid[3, 5] = True
    m = pixel_mask(grid, 333, 201)  # portrait: H > W
    ys, xs = np.nonzero(m)
    e_r, e_c = cell_edges(333, 8), cell_edges(201, 8)
    assert ys.min() == e_r[3] and ys.max() == e_r[4] - 1 and xs.min() == e_c[5] and xs.max() == e_c[6] - 1
    assert m.sum() == (e_r[4] - e_r[3]) * (e_c[6] - e_c[5])


@pytest.mark.parametrize("fill", ["black", "blur", "pixelate", "mean"])
def test_fill_only_touches_pruned(fill):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 40, 50, 3), dtype=np.uint8)
    orig = frames.copy()
    keep = rng.random((3, 4, 4)) < 0.5
    keep[1] = True  # a slab kept whole beside pruned ones (--keep near 1)
    slab = np.array([0, 0, 1, 1, 2, 2])
    out = fill_clip(frames, keep, slab, fill)
    for f in range(6):
        m = pixel_mask(keep[slab[f]], 40, 50)
        assert (out[f][m] == orig[f][m]).all()
        if fill == "black":
            assert (out[f][~m] == 0).all()
        elif (~m).any():
            assert (out[f][~m] != orig[f][~m]).any()


def test_pruned_rects_cover_each_pruned_cell_once():
    rng = np.random.default_rng(0)
    assert pruned_rects(np.ones((4, 5), bool)) == []
    for p in (0.0, 0.2, 0.5, 0.8, 1.0):
        for _ in range(20):
            keep = rng.random((20, 20)) < p
            keep[4:13, 2:10] = True
            keep[5:12, 3:9] = False  # a pruned block alone: its rows' identical runs become one rectangle
            covered = np.zeros((20, 20), int)
            rects = pruned_rects(keep)
            for r0, r1, c0, c1 in rects:
                covered[r0:r1, c0:c1] += 1
            assert (covered == ~keep).all()
            assert len(rects) < sum(len(np.flatnonzero(np.diff(np.r_[0, ~row, 0]))) // 2 for row in keep)
