"""Which heads do the same job? k-means over the heads' attention patterns.

Each head (of every layer) at one step becomes one point: its pattern vector (the query rows
of its patterns on all probes, flattened; see ``attention_metrics``). Heads whose points are
close attend the same way on the same inputs.

k-means (Lloyd's algorithm) looks for k centres c_1..c_k minimising the *inertia*
sum_i min_j |x_i - c_j|^2. It alternates two steps until the assignment stops changing:
give each point to its nearest centre, then move each centre to the mean of its points.
It only finds a local minimum, so it starts from k-means++ centres (the first one a random
point, each next one a point drawn with probability proportional to its squared distance to
the nearest centre so far) and keeps the best of several seeded restarts.

Choosing k: the silhouette of point i is s_i = (b_i - a_i) / max(a_i, b_i), where a_i is
its mean distance to the other points of its cluster and b_i the smallest mean distance to
the points of another cluster (s_i = 0 for a point alone in its cluster, and for every
point when one cluster holds them all). The mean silhouette is near 1 for tight, well
separated clusters. We try k = 2..n-1 (n heads) and keep the k with the largest mean
silhouette (the smallest such k on a tie). With fewer than 3 heads, or when every head
attends identically (to within 1e-9), there is one cluster.

The head-to-head cosine similarity matrix is reported beside the clusters: it needs no
choice of k and shows the same structure directly.
"""

from dataclasses import dataclass

import numpy as np

from .attention_metrics import cosine_similarity


@dataclass
class KMeansResult:
    labels: np.ndarray  # (n,) cluster of each point, 0..k-1
    centers: np.ndarray  # (k, D)
    inertia: float  # sum of squared distances of the points to their centres


def squared_distances(points, centers):
    """|x_i - c_j|^2 for every point and centre: (n, D), (k, D) -> (n, k)."""
    diff = points[:, None, :] - centers[None, :, :]
    return (diff**2).sum(axis=-1)


def kmeans_plus_plus(points, k, rng):
    """k starting centres, spread out by k-means++ sampling."""
    n = len(points)
    chosen = [int(rng.integers(n))]
    for _ in range(1, k):
        nearest = squared_distances(points, points[chosen]).min(axis=1)
        total = nearest.sum()
        if total > 0:
            chosen.append(int(rng.choice(n, p=nearest / total)))
        else:  # every point already sits on a centre
            chosen.append(int(rng.integers(n)))
    return points[chosen].copy()


def lloyd(points, centers, max_iter=100):
    """Lloyd's iterations from the given centres until the assignment is stable."""
    labels = None
    for _ in range(max_iter):
        new_labels = squared_distances(points, centers).argmin(axis=1)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(len(centers)):
            members = points[labels == j]
            if len(members):  # an empty cluster keeps its old centre
                centers[j] = members.mean(axis=0)
    inertia = float(squared_distances(points, centers)[np.arange(len(points)), labels].sum())
    return KMeansResult(labels=labels, centers=centers, inertia=inertia)


def kmeans(points, k, *, seed=0, restarts=10, max_iter=100):
    """The best (lowest inertia) of ``restarts`` seeded k-means++ / Lloyd runs."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must be a 2-D array (points, features), got shape "
                         f"{points.shape}")
    if not np.isfinite(points).all():  # a NaN makes every distance NaN: labels by chance
        raise ValueError("points must be finite numbers, got NaN or infinity")
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be between 1 and the number of points ({len(points)})")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        result = lloyd(points, kmeans_plus_plus(points, k, rng), max_iter)
        if best is None or result.inertia < best.inertia:
            best = result
    return best


def silhouette_score(points, labels):
    """Mean silhouette of a clustering (see the module docstring)."""
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels)
    distances = np.sqrt(np.maximum(squared_distances(points, points), 0))
    scores = np.zeros(len(points))
    for i in range(len(points)):
        own = labels == labels[i]
        if own.sum() == 1 or own.all():
            continue  # alone in its cluster, or one cluster holds every point: it scores 0
        a = distances[i, own].sum() / (own.sum() - 1)  # the 0 distance to itself is left out
        b = min(distances[i, labels == other].mean() for other in np.unique(labels[~own]))
        if max(a, b) > 0:
            scores[i] = (b - a) / max(a, b)
    return float(scores.mean())


def choose_k(points, k_values, *, seed=0):
    """The k of k_values with the best mean silhouette, and every k's silhouette."""
    silhouettes = {}
    for k in k_values:
        silhouettes[k] = silhouette_score(points, kmeans(points, k, seed=seed).labels)
    best = max(silhouettes, key=lambda k: (silhouettes[k], -k))
    return best, silhouettes


def similarity_matrix(vectors):
    """Cosine similarity of every pair of vectors: (n, D) -> (n, n)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return cosine_similarity(vectors[:, None, :], vectors[None, :, :])


def cluster_heads(head_vectors, k=None, *, seed=0):
    """Cluster the heads of all layers: head_vectors (L, H, D) -> a JSON-ready dict.

    ``labels`` is [layer][head]; heads are numbered layer-major (layer * H + head) in
    ``similarity``. With k None, k is chosen by silhouette over 2..L*H-1.
    """
    head_vectors = np.asarray(head_vectors, dtype=np.float64)
    if head_vectors.ndim != 3:
        raise ValueError(f"head_vectors must have shape (layers, heads, D), got "
                         f"{head_vectors.shape}")
    if not np.all(np.isfinite(head_vectors)):
        raise ValueError("head_vectors hold NaN or infinite values: no clusters to find")
    layers, heads, _ = head_vectors.shape
    points = head_vectors.reshape(layers * heads, -1)
    silhouettes = {}
    if k is not None:
        chosen_by = "given"
    elif len(points) < 3:
        k, chosen_by = 1, "fewer than 3 heads: one cluster"
    elif np.allclose(points, points[0], rtol=0, atol=1e-9):  # equal but for rounding
        k, chosen_by = 1, "every head attends identically: one cluster"
    else:
        k, silhouettes = choose_k(points, range(2, len(points)), seed=seed)
        chosen_by = "silhouette"
    result = kmeans(points, k, seed=seed)
    return {
        "k": int(k),
        "chosen_by": chosen_by,
        "silhouette_by_k": {str(key): value for key, value in silhouettes.items()},
        "labels": result.labels.reshape(layers, heads).tolist(),
        "inertia": result.inertia,
        "similarity": similarity_matrix(points).round(4).tolist(),
    }
