"""cleanlab's neighbour-based checks, fed the audit's own neighbour graph as `knn_graph`.

cleanlab's Datalab can build its own k-nearest-neighbour graph from the vectors, a second full
search on top of the audit's. Given the graph it searches nothing: its non-IID check (are rows
that sit near each other in feature space also near each other in the store's order, as frames
of one video extracted in order are?) and its outlier check run on the audit's neighbours.

    result = graph_checks(labels, graph)
"""

from __future__ import annotations

import warnings

import numpy as np


def graph_checks(labels: np.ndarray, graph) -> dict:
    """Runs cleanlab's non_iid and outlier checks on `graph` (a `NeighbourGraph`).

    Args:
        labels: (N,) class indices of every row (-1 for none).
        graph: the audit's neighbour graph over the same rows.

    Returns:
        {"non_iid_p_value", "non_iid_flagged", "outliers", "k", "lab"}: lab is the Datalab
        that ran (its statistics hold the graph it was given).
    """
    from cleanlab import Datalab

    k = graph.k
    lab = Datalab(data={"label": np.asarray(labels).tolist()}, label_name="label", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.find_issues(knn_graph=graph.knn_graph(),
                        issue_types={"non_iid": {"k": k}, "outlier": {"k": k}})
    summary = lab.get_issue_summary()
    non_iid = lab.get_info("non_iid")
    counts = dict(zip(summary["issue_type"], summary["num_issues"]))
    return {"non_iid_p_value": float(non_iid.get("p-value", float("nan"))),
            "non_iid_flagged": bool(counts.get("non_iid", 0)),
            "outliers": int(counts.get("outlier", 0)), "k": k, "lab": lab}
