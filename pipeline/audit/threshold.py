"""The near-duplicate threshold that adapts to the store (`audit --threshold auto`, the default).

A fixed cut is calibrated on one kind of duplicate in one dataset through one backbone; frames
of one photo (crops, brightness changes) sit much farther apart than re-encoded copies, and a
small store's distinct photos sit much farther apart than a large one's. The store itself says
where its near-duplicates end: look at a sample of rows and their nearest neighbours in order.

The rule (documented in docs/audit.md):
  1. For a seeded sample of up to SAMPLE_ROWS rows, the exact cosine distances to their
     PROFILE_K nearest other rows, ascending, and the median distance to all rows (the
     backbone's distance between unrelated images in this store, `pair_median`).
  2. Each sampled row's list is cut in two where the near and the far part are best separated
     (Otsu's rule: the cut with the largest between-part variance). When the distance just
     after the cut is at least GAP_RATIO times the one just before it, and that one lies below
     half of `pair_median`, the row has a cluster: the near part are its near-duplicates, the
     first row after the cut its nearest distinct image. A cluster that holds more than
     CLASS_SHARE of its row's class-mates is that class, not one source: distinct photos of
     a small, well-separated class (a strong backbone on a few-shot set) also end where the
     next class begins, while frames of one source are a part of their class, with the
     class's other sources beyond the cut. Such rows count as unclustered.
  3. When at least MIN_CLUSTERED of the sampled rows show such a cluster, and the clusters'
     95th-percentile radius lies below the 5th percentile of the distinct images after them,
     the threshold is the geometric mean of those two figures: midway, on a log scale, between
     where the store's near-duplicates end and its distinct images begin.
  4. Otherwise (no cluster structure, as in clean data) it is the calibrated default, 0.15.
     The threshold is never below that default and never above half of `pair_median`; when
     most sampled rows have no cluster (a few copies among distinct photos), never above the
     1st percentile of those rows' nearest-neighbour distance either, where distinct photos
     of this store begin to meet.

Usage:
    choice = choose_threshold(prepared, seed=0, labels=labels)  # prepared: prepare_vectors(...)[0]
    choice = threshold_from_profile(graph.profile, labels=labels)  # the graph's own profile
    choice.value, choice.how
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Cosine distance on mean-centred vectors at or under which two rows count as near-duplicates.
# Calibrated on flowers5 with the shared MobileNet weights (tests/audit/test_audit_flowers.py):
# 40 photos resized to 90% and re-encoded at JPEG quality 70 sat at median 0.068 from their
# originals (38 of 40 under 0.15, the farthest at 0.19), while the nearest other photo of a row
# was at >= 0.245 for 99% of rows (the closest pair of different photos: 0.134).
DEFAULT_THRESHOLD = 0.15

SAMPLE_ROWS = 512  # rows whose neighbour lists are read: +-2 points of share at 95% confidence
PROFILE_K = 64  # neighbours per sampled row: clusters of up to 64 rows show their end
GAP_RATIO = 1.5  # the jump at the cut: 1.01 for the median clean flowers5 row, 2.2-2.7 for frames
MIN_CLUSTERED = 0.05  # share of sampled rows with a cluster before the store counts as clustered
# A cluster holding more than this share of its row's class-mates is the class itself: frames
# of one photo among 8 photos of a class hold 9 of 79, a whole class of 25 photos 24 of 24.
CLASS_SHARE = 0.5
BLOCK_ROWS = 4096


@dataclass
class NeighbourProfile:
    """Step 1 of the rule: sampled rows, their nearest other rows and the median pair distance.

    Attributes:
        rows: (S,) the sampled rows, ascending.
        indices: (S, P) their nearest other rows, nearest first.
        distances: (S, P) the exact cosine distances to them, ascending.
        pair_median: the median distance between unrelated rows.
    """

    rows: np.ndarray
    indices: np.ndarray
    distances: np.ndarray
    pair_median: float


def profile_rows(n: int, seed: int = 0, sample_rows: int = SAMPLE_ROWS) -> np.ndarray:
    """The rows whose neighbour lists the rule reads: a seeded sample, ascending."""
    if n < 3:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, min(n, sample_rows), replace=False))


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold used and why: `how` is one line for summary.json and report.html."""

    value: float
    how: str
    adaptive: bool
    facts: dict = field(default_factory=dict)


def neighbour_profile(prepared, sample_rows: int = SAMPLE_ROWS, k: int = PROFILE_K,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(sorted distances of sampled rows to their k nearest other rows (S, k), those rows'
    indices (S, k), the sampled rows (S,), pair_median).

    Reads `prepared` (unit-length rows) in blocks: S x block distances at a time, never N x N.
    """
    n = int(prepared.shape[0])
    if n < 3:
        return np.zeros((0, 0)), np.zeros((0, 0), dtype=np.int64), np.zeros(0, np.int64), 1.0
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(n, sample_rows), replace=False))  # as `profile_rows`
    queries = np.asarray(prepared[rows], dtype=np.float32)
    k = min(k, n - 1)
    best = np.full((len(rows), 0), np.inf)
    best_index = np.zeros((len(rows), 0), dtype=np.int64)
    some = []  # a random handful of each block's distances, for the median
    for a in range(0, n, BLOCK_ROWS):
        b = min(a + BLOCK_ROWS, n)
        dist = 1.0 - (queries @ np.asarray(prepared[a:b], dtype=np.float32).T).astype(np.float64)
        inside = (rows >= a) & (rows < b)
        dist[np.flatnonzero(inside), rows[inside] - a] = np.inf  # a row is not its own neighbour
        pool = np.concatenate([best, dist], axis=1)
        pool_index = np.concatenate([best_index, np.broadcast_to(np.arange(a, b), dist.shape)],
                                    axis=1)
        keep = np.argpartition(pool, min(k, pool.shape[1]) - 1, axis=1)[:, :k]
        best = np.take_along_axis(pool, keep, axis=1)
        best_index = np.take_along_axis(pool_index, keep, axis=1)
        picked = rng.integers(0, b - a, size=min(64, b - a))
        some.append(dist[:, picked][np.isfinite(dist[:, picked])])
    order = np.argsort(best, axis=1, kind="stable")
    return (np.clip(np.take_along_axis(best, order, axis=1), 0.0, 2.0),
            np.take_along_axis(best_index, order, axis=1), rows,
            float(np.median(np.concatenate(some))))


def class_sized(at: np.ndarray, neighbours: np.ndarray, rows: np.ndarray,
                labels) -> np.ndarray:
    """(S,) whether each sampled row's near part (its neighbours up to the cut `at`) holds more
    than CLASS_SHARE of the row's labelled class-mates: the class itself, not one source."""
    if labels is None or not len(rows):
        return np.zeros(len(rows), dtype=bool)
    labels = np.asarray(labels)
    own = labels[rows]
    same = (labels[neighbours] == own[:, None]) & (own[:, None] >= 0)
    inside = np.cumsum(same, axis=1)[np.arange(len(rows)), at]
    counts = np.bincount(labels[labels >= 0], minlength=int(own.max(initial=0)) + 1)
    mates = np.where(own >= 0, counts[np.maximum(own, 0)] - 1, 0)
    return (mates > 0) & (inside > CLASS_SHARE * mates)


def best_cuts(profile: np.ndarray) -> np.ndarray:
    """Per row of sorted distances (S, k): the index of the last "near" entry of the cut with
    the largest between-part variance (Otsu's rule on each row's own list)."""
    k = profile.shape[1]
    total = np.cumsum(profile, axis=1)
    below = np.arange(1, k)
    near_mean = total[:, :-1] / below
    far_mean = (total[:, -1:] - total[:, :-1]) / (k - below)
    return np.argmax(below * (k - below) * (near_mean - far_mean) ** 2, axis=1)


def adaptive_threshold(profile: np.ndarray, pair_median: float,
                       default: float = DEFAULT_THRESHOLD, whole_class=None) -> ThresholdChoice:
    """The rule of the module docstring, from sorted neighbour distances (S, k) and the
    median distance between unrelated rows. Works on any rows' neighbour lists (a cached
    neighbour graph's too). `whole_class`: callable(cuts) -> (S,) bool, the rows whose near
    part is their whole class (`class_sized`); None where there are no labels to read."""
    ceiling = 0.5 * pair_median
    facts = {"sampled_rows": int(len(profile)), "neighbours_read": int(profile.shape[1])
             if profile.ndim == 2 else 0, "pair_median": round(pair_median, 4),
             "gap_ratio": GAP_RATIO, "min_clustered_share": MIN_CLUSTERED}
    fallback = (f"the calibrated default {default:g} (flowers5 + MobileNet): ")
    if profile.ndim != 2 or profile.shape[1] < 2:
        return ThresholdChoice(default, fallback + "too few rows to read the store's own "
                               "neighbour distances", False, facts)
    at = best_cuts(profile)
    index = np.arange(len(profile))
    radius, beyond = profile[index, at], profile[index, at + 1]
    # Exact copies sit at 0: their jump is still finite (and defined where most rows are copies).
    floor = max(0.01 * pair_median, 1e-12)
    jump = np.maximum(beyond, floor) / np.maximum(radius, floor)
    clustered = (jump >= GAP_RATIO) & (radius < ceiling)
    classes = clustered & whole_class(at) if whole_class else np.zeros_like(clustered)
    clustered &= ~classes
    share = float(clustered.mean())
    facts.update(clustered_share=round(share, 4), class_share=CLASS_SHARE,
                 class_sized_share=round(float(classes.mean()), 4))
    if share < MIN_CLUSTERED:
        whole, value = (f"; for {classes.mean():.0%} the cluster is the row's whole class (more "
                        f"than {CLASS_SHARE:.0%} of its class-mates: distinct photos of a "
                        "well-separated class, not copies of one source)" if classes.any()
                        else ""), default
        if classes.mean() >= MIN_CLUSTERED:
            # Those rows' nearest neighbours are distinct photos: where the default reaches
            # them, half their 1st percentile keeps them apart and still finds copies.
            nearest = float(np.percentile(profile[classes, 0], 1))
            facts["class_nearest_p1"] = round(nearest, 4)
            if nearest <= default:
                value = round(0.5 * nearest, 4)
                whole += (f"; such classes are tighter than the default, so the threshold is "
                          f"half the 1st percentile of their rows' nearest-neighbour distance "
                          f"({nearest:.3f})")
        lead = fallback if value == default else (f"{value:g}, below the calibrated default "
                                                  f"{default:g} (flowers5 + MobileNet): ")
        return ThresholdChoice(value, lead + f"only {share:.0%} of {len(profile)} sampled "
                               f"rows have a cluster of near neighbours (a jump of "
                               f"{GAP_RATIO:g}x or more in their sorted neighbour distances; "
                               f"{MIN_CLUSTERED:.0%} needed){whole}", False, facts)
    end = float(np.percentile(radius[clustered], 95))
    start = float(np.percentile(beyond[clustered], 5))
    facts.update(cluster_radius_p95=round(end, 4), distinct_start_p5=round(start, 4))
    if end >= start:
        return ThresholdChoice(default, fallback + f"the sampled rows' clusters (95th percentile "
                               f"radius {end:.3f}) overlap their distinct neighbours (5th "
                               f"percentile {start:.3f})", False, facts)
    raw = float(np.sqrt(max(end, 1e-6) * start))
    cap, cap_why = ceiling, "half the median pair distance"
    if share < 0.5:  # mostly distinct rows: their own nearest neighbours say where to stop
        distinct = float(np.percentile(profile[~clustered, 0], 1))
        facts["unclustered_nearest_p1"] = round(distinct, 4)
        if distinct < cap:
            cap, cap_why = distinct, ("the 1st percentile of the unclustered rows' nearest-"
                                      "neighbour distance")
    value = float(min(max(raw, default), max(cap, default)))
    bound = (f", raised to the default {default:g}" if raw < default else
             f", capped at {cap_why} ({cap:.3f})" if raw > cap else "")
    if raw > cap and cap < default:
        bound += f", so kept at the default {default:g}"
    return ThresholdChoice(round(value, 4), (
        f"adapted to this store: {share:.0%} of {len(profile)} sampled rows have a cluster of "
        f"near neighbours ending at {end:.3f} (95th percentile) before their nearest distinct "
        f"row at {start:.3f} (5th percentile); the threshold is their geometric mean"
        f"{bound}"), True, facts)


def exact_profile(prepared, seed: int = 0) -> NeighbourProfile:
    """The profile read exactly: the sampled rows against every row (S x N distances)."""
    distances, indices, rows, pair_median = neighbour_profile(prepared, seed=seed)
    return NeighbourProfile(rows, indices, distances, pair_median)


def threshold_from_profile(profile: NeighbourProfile, given="auto",
                           default: float = DEFAULT_THRESHOLD, labels=None) -> ThresholdChoice:
    """The threshold the audit uses: `given` when it is a number, else the adaptive rule on the
    profile (`labels`: each row's class, -1 unlabelled; they tell a class from one source)."""
    if given != "auto":
        return ThresholdChoice(float(given), "given with --threshold", False)
    return adaptive_threshold(profile.distances, profile.pair_median, default,
                              lambda at: class_sized(at, profile.indices, profile.rows, labels))


def choose_threshold(prepared, given="auto", seed: int = 0,
                     default: float = DEFAULT_THRESHOLD, labels=None) -> ThresholdChoice:
    """`threshold_from_profile` on the exact profile of the prepared rows."""
    if given != "auto":
        return ThresholdChoice(float(given), "given with --threshold", False)
    return threshold_from_profile(exact_profile(prepared, seed), given, default, labels)
