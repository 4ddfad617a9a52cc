"""Agent paths along the lane graph, resampled every PATH_STEP_M, with lane positions for lead finding."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.map import RoadMap

PATH_STEP_M = 0.5


@dataclass
class AgentPaths:
    """Per-agent paths along the lane graph, resampled at PATH_STEP_M and padded to one length.

    points (N, K, 2), heading (N, K), lane (N, K) lane index per sample (-1 padding),
    length (N,) usable arc length, own_lane_start (N, L) arc length where each map lane starts on
    each path (NaN where the path does not use that lane), lane_start the same plus virtual starts
    of lanes merging into the path (see `_add_merge_siblings`), for finding leads.
    """

    points: np.ndarray
    heading: np.ndarray
    lane: np.ndarray
    length: np.ndarray
    own_lane_start: np.ndarray
    lane_start: np.ndarray

    def __post_init__(self) -> None:
        # Contiguous x / y copies: gathers on (N, K) arrays are much cheaper than on (N, K, 2).
        self.px = np.ascontiguousarray(self.points[..., 0])
        self.py = np.ascontiguousarray(self.points[..., 1])

    @classmethod
    def build(cls, road_map: RoadMap, lane_chains: list[list[str]], lateral_offsets: np.ndarray | None = None) -> "AgentPaths":
        n, num_lanes = len(lane_chains), len(road_map.lanes)
        offsets = np.zeros(n) if lateral_offsets is None else np.asarray(lateral_offsets, dtype=np.float64)
        resampled, lanes_per_sample, starts = [], [], np.full((n, num_lanes), np.nan)
        for i, chain in enumerate(lane_chains):
            pts, lane_of_pt, s0, lengths = [], [], 0.0, []
            for j, lane_id in enumerate(chain):
                k = road_map.lane_index[lane_id]
                line = road_map.lanes[k].centerline
                changing = j > 0 and road_map.is_lane_change(chain[j - 1], lane_id)
                if changing:  # drive the lane change's blended path instead of the previous lane's centerline
                    pts.pop(), lane_of_pt.pop()
                    s0 -= lengths.pop()
                    line = road_map.lane_change_centerline(chain[j - 1], lane_id)
                pts.append(line[:-1] if lane_id != chain[-1] else line)
                owner = np.full(len(pts[-1]), k)
                if changing:  # the first half still belongs to the lane being left
                    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])
                    half = len(line) // 2
                    owner[:half] = road_map.lane_index[chain[j - 1]]
                    starts[i, k] = s0 + cum[half] if np.isnan(starts[i, k]) else starts[i, k]
                    length = cum[-1]
                else:
                    starts[i, k] = s0 if np.isnan(starts[i, k]) else starts[i, k]
                    length = road_map.centerline_arc_lengths[k]
                lane_of_pt.append(owner)
                lengths.append(length)
                s0 += length
            pts = np.concatenate(pts)
            lane_of_pt = np.concatenate(lane_of_pt)
            seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
            keep = np.concatenate([[True], seg > 1e-9])
            pts, lane_of_pt = pts[keep], lane_of_pt[keep]
            cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
            s = np.arange(0.0, cum[-1] + 1e-9, PATH_STEP_M)
            xy = np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], -1)
            lane_idx = lane_of_pt[np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(cum) - 1)]
            heading = np.arctan2(np.gradient(xy[:, 1]), np.gradient(xy[:, 0]))
            if offsets[i]:
                xy = xy + offsets[i] * np.stack([-np.sin(heading), np.cos(heading)], -1)
            resampled.append((xy, heading))
            lanes_per_sample.append(lane_idx)
        own_starts = starts.copy()
        _add_merge_siblings(road_map, starts)
        k_max = max(len(xy) for xy, _ in resampled)
        points = np.zeros((n, k_max, 2))
        heading = np.zeros((n, k_max))
        lane = np.full((n, k_max), -1, dtype=np.int64)
        length = np.zeros(n)
        for i, ((xy, h), lane_idx) in enumerate(zip(resampled, lanes_per_sample)):
            k = len(xy)
            points[i, :k], points[i, k:] = xy, xy[-1]
            heading[i, :k], heading[i, k:] = h, h[-1]
            lane[i, :k], lane[i, k:] = lane_idx, lane_idx[-1]
            length[i] = (k - 1) * PATH_STEP_M
        return cls(points, heading, lane, length, own_starts, starts)

    def pose_at(self, s: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) at arc lengths s (N,) on paths `rows` (N,; default path i for s[i]), clamped to each
        path; linear in x, y.

        The heading is that of the sample segment (0.5 m resolution), which is what following a
        polyline means.
        """
        last = self.points.shape[1] - 1
        rows = np.arange(len(s)) if rows is None else rows
        u = np.minimum(np.maximum(s, 0.0), self.length[rows]) / PATH_STEP_M
        i0 = np.minimum(u.astype(np.int64), max(last - 1, 0))
        i1 = np.minimum(i0 + 1, last)
        frac = u - i0
        x0, y0 = self.px[rows, i0], self.py[rows, i0]
        return x0 + (self.px[rows, i1] - x0) * frac, y0 + (self.py[rows, i1] - y0) * frac, self.heading[rows, i0]

    def lane_at(self, s: np.ndarray) -> np.ndarray:
        u = np.minimum(np.maximum((s / PATH_STEP_M).astype(np.int64), 0), self.points.shape[1] - 1)
        return self.lane[np.arange(len(s)), u]


def _add_merge_siblings(road_map: RoadMap, starts: np.ndarray) -> None:
    """Give lanes that merge into a lane of a path a virtual position on that path, in place.

    A lane Q that ends in the same successor as a lane P on the path is placed so that both end
    at the same arc length. An agent on Q then counts as a lead for agents on P exactly when it
    is closer to the merge point, which makes merging traffic zip instead of colliding.
    """
    lengths = road_map.lane_lengths
    for p, lane in enumerate(road_map.lanes):
        if np.isnan(starts[:, p]).all():  # on no path (yet): nothing to place beside it
            continue
        for succ in lane.successors:
            for q_id in road_map.lane(succ).predecessors:
                q = road_map.lane_index[q_id]
                if q == p:
                    continue
                fill = np.isnan(starts[:, q]) & ~np.isnan(starts[:, p])
                starts[fill, q] = starts[fill, p] + lengths[p] - lengths[q]
