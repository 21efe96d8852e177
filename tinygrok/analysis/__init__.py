"""What a run directory tells about grokking, computed from plain arrays.

Analysis reads run directories (``rundir``) and never imports the model or the training loop,
so it works on any run, finished or copied from another machine, in a notebook or from
``python -m tinygrok.analyze RUN_DIR``. One concept per module:

- ``rundir``            : :func:`load_run` and the run-directory format (the contract)
- ``phases``            : memorization, transition, post-grokking and dips, from accuracies
- ``attention_metrics`` : entropy, position score, consistency, emergence step per head
- ``clustering``        : k-means (k-means++ start, silhouette choice of k) over the heads
- ``fourier``           : spectrum of the element embeddings; primitive roots, discrete logs
- ``claims``            : the paper's three claims, measured on one run
- ``run_analysis``      : all of the above for one run: what analysis.json holds
"""

from .attention_metrics import (
    AttentionTimeline,
    attention_timeline,
    consistency,
    cosine_similarity,
    emergence_steps,
    last_query_entropy,
    mean_query_entropy,
    pattern_vectors,
    position_score,
    row_entropy,
)
from .claims import evaluate_claims
from .clustering import cluster_heads, kmeans, silhouette_score
from .fourier import (
    discrete_log_table,
    fourier_basis,
    fourier_timeline,
    frequency_norms,
    gini,
    key_frequencies,
    primitive_root,
)
from .phases import find_phases, phase_bands
from .rundir import Run, RunDirectoryError, load_run
from .run_analysis import Analysis, Settings, analyze_run

__all__ = [
    "Analysis", "AttentionTimeline", "Run", "RunDirectoryError", "Settings",
    "analyze_run", "attention_timeline", "cluster_heads", "consistency", "cosine_similarity",
    "discrete_log_table", "emergence_steps", "evaluate_claims", "find_phases",
    "fourier_basis", "fourier_timeline", "frequency_norms", "gini", "key_frequencies",
    "kmeans", "last_query_entropy", "load_run", "mean_query_entropy", "pattern_vectors",
    "phase_bands", "position_score", "primitive_root", "row_entropy", "silhouette_score",
]
