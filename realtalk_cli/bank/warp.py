"""Dense warps between two sets of face-mesh points, their refinement by optical flow, and smooth
filling of sparse values.

A piecewise-affine warp over a fixed triangulation: each output pixel finds the triangle it lies in
(rasterised once per frame with OpenCV) and maps through that triangle's affine transform into the
source image, so lips, teeth and skin move exactly with the mesh and nothing is resampled twice.
The triangulation is computed once, on an open-mouth example with anchor points around it, so the
mouth interior is covered by triangles that join upper and lower lips and flatten as the mouth closes.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay


def triangulate(points: np.ndarray) -> np.ndarray:
    """[P, 2] points (an open-mouth example) -> [F, 3] int32 triangles (Delaunay, slivers kept: every
    point of the hull is covered, which the warp needs)."""
    return Delaunay(np.asarray(points, np.float64)).simplices.astype(np.int32)


def anchors(points: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """Eight points on a box around `points` [P, 2], `margin` of its size outside: the warp is defined
    (and smooth) a little beyond the face, so the region's soft edge never samples outside it."""
    lo, hi = points.min(0), points.max(0)
    pad = (hi - lo) * margin
    (x0, y0), (x1, y1) = lo - pad, hi + pad
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[x0, y0], [xm, y0], [x1, y0], [x1, ym], [x1, y1], [xm, y1], [x0, y1], [x0, ym]], np.float32)


def _affines(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Per-triangle affine maps [F, 2, 3] taking triangle vertices dst [F, 3, 2] to src [F, 3, 2]."""
    d = np.concatenate([dst, np.ones(dst.shape[:2] + (1,))], -1).astype(np.float64)  # [F, 3, 3]
    det = np.linalg.det(d)
    ok = np.abs(det) > 1e-9
    out = np.zeros((len(dst), 2, 3))
    out[:, 0, 0] = out[:, 1, 1] = 1.0  # degenerate triangles: identity (they cover no pixel anyway)
    # solve d @ M^T = src for each triangle: M^T = inv(d) @ src
    out[ok] = np.swapaxes(np.linalg.solve(d[ok], src[ok].astype(np.float64)), 1, 2)
    return out


def piecewise_affine_maps(dst_pts: np.ndarray, src_pts: np.ndarray, triangles: np.ndarray,
                          box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map_x, map_y, covered) float32 [h, w] for the pixels of `box` = (x0, y0, x1, y1) in the
    destination image: where each pixel samples the source so that dst_pts land on src_pts.

    Pixels outside every triangle are marked uncovered (covered = False) and map to themselves."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    local = dst_pts.astype(np.float64) - (x0, y0)
    tri_dst = local[triangles]
    ids = np.full((h, w), -1, np.int32)
    lo, hi = tri_dst.min(1), tri_dst.max(1)
    visible = np.flatnonzero((hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] < w) & (lo[:, 1] < h))
    fixed = np.round(tri_dst * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    for f in visible:
        cv2.fillConvexPoly(ids, fixed[f], int(f), lineType=cv2.LINE_8, shift=4)
    m = _affines(tri_dst, src_pts[triangles]).astype(np.float32).reshape(-1, 6)
    # uncovered pixels take an extra identity map (in box coordinates, shifted back to the image)
    m = np.vstack([m, np.array([1, 0, x0, 0, 1, y0], np.float32)])
    covered = ids >= 0
    ids[~covered] = len(m) - 1
    xs = np.arange(w, dtype=np.float32)[None]
    ys = np.arange(h, dtype=np.float32)[:, None]
    c = m[ids]  # [h, w, 6]
    map_x = c[..., 0] * xs + c[..., 1] * ys + c[..., 2]
    map_y = c[..., 3] * xs + c[..., 4] * ys + c[..., 5]
    return map_x.astype(np.float32), map_y.astype(np.float32), covered


def warp(image: np.ndarray, dst_pts: np.ndarray, src_pts: np.ndarray, triangles: np.ndarray,
         box: tuple[int, int, int, int]) -> np.ndarray:
    """The part `box` of the destination image: `image` warped so that src_pts move to dst_pts."""
    map_x, map_y, _ = piecewise_affine_maps(dst_pts, src_pts, triangles, box)
    return resample(image, map_x, map_y)


def resample(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    # cubic: the warp is the bank's only resampling, and lips and teeth should keep their edges
    return cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


MIN_FLOW_SIDE = 32  # DIS optical flow crashes on images smaller than its patches and pyramid


def _span(idx: np.ndarray, n: int) -> slice:
    """The slice from idx's first to last entry, grown to MIN_FLOW_SIDE inside [0, n)."""
    a, b = int(idx[0]), int(idx[-1]) + 1
    grow = max(0, MIN_FLOW_SIDE - (b - a))
    a = max(0, a - (grow + 1) // 2)
    b = min(n, max(b + grow // 2, a + MIN_FLOW_SIDE))
    return slice(min(a, b - MIN_FLOW_SIDE), b)


def register_maps(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, target: np.ndarray, known: np.ndarray,
                  still: np.ndarray, grid: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Refine a warp (maps into `image`) so that the warped image lines up with `target` [h, w, 3] where
    `known` [h, w] is true and stays put where `still` is: the optical flow (DIS) between the two, kept
    on `known`, zero on `still`, spread smoothly over the box by the membrane fill and composed into
    the maps, so the image is still resampled only once. Corrects what the mesh fit gets wrong by a
    pixel or two (the nose's edge, the skin above the lip) without moving what the mesh must place."""
    h, w = map_x.shape
    rows, cols = np.flatnonzero(known.any(1)), np.flatnonzero(known.any(0))
    if len(rows) == 0 or min(h, w) < MIN_FLOW_SIDE:
        return map_x, map_y
    # the flow is needed only where it is known (DIS needs some pixels around it: at least MIN_FLOW_SIDE a side)
    sub = np.s_[_span(rows, h), _span(cols, w)]
    rough = cv2.remap(image, map_x[sub], map_y[sub], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grey = lambda a: cv2.cvtColor(np.clip(a, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)  # noqa: E731
    flow = np.zeros((h, w, 2), np.float32)
    flow[sub] = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(grey(target[sub]), grey(rough), None)
    flow[still] = 0
    d = fill_smooth(flow, (known | still).astype(np.float32), grid)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    at = (xs + d[..., 0], ys + d[..., 1])  # target pixel x shows what the warp put at x + d
    return (cv2.remap(map_x, *at, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            cv2.remap(map_y, *at, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def fill_smooth(values: np.ndarray, weights: np.ndarray, grid: int = 32) -> np.ndarray:
    """Spread `values` [h, w, C], known where `weights` [h, w] > 0, smoothly over the whole image: the
    harmonic (membrane) interpolation of the known values, solved on a coarse grid of about `grid`
    cells a side and upsampled. Used to carry the colour difference measured on the mask's border
    into its inside: the gradient-domain (Poisson) blend of a flat difference, at a fraction of the cost."""
    h, w = weights.shape
    s = max(1.0, max(h, w) / grid)
    gh, gw = max(2, int(round(h / s))), max(2, int(round(w / s)))
    wts = cv2.resize(weights.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    vals = cv2.resize((values * weights[..., None]).astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    vals = vals.reshape(gh, gw, -1)
    known = wts > 0.25
    if not known.any():
        return np.zeros_like(values, np.float32)
    vals = vals / np.maximum(wts, 1e-6)[..., None]
    u = _harmonic(vals, known)
    return cv2.resize(u, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)


def _harmonic(vals: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Solve the discrete Laplace equation for the unknown cells (4-neighbours, free borders)."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import spsolve

    h, w = known.shape
    idx = np.arange(h * w).reshape(h, w)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1], idx[1:])]  # each grid edge once
    rows = np.concatenate([x.ravel() for a, b in pairs for x in (a, b)])
    cols = np.concatenate([x.ravel() for a, b in pairs for x in (b, a)])
    adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(h * w, h * w)).tocsr()
    degree = np.asarray(adj.sum(1)).ravel()
    unknown = ~known.ravel()
    u_idx, k_idx = np.flatnonzero(unknown), np.flatnonzero(~unknown)
    out = vals.reshape(h * w, -1).astype(np.float64).copy()
    if len(u_idx):
        rows_u = adj[u_idx]
        lap = (diags(degree[u_idx]) - rows_u[:, u_idx]).tocsc()
        out[u_idx] = spsolve(lap, rows_u[:, k_idx] @ out[k_idx]).reshape(len(u_idx), -1)
    return out.reshape(h, w, -1).astype(np.float32)
