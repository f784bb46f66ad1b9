"""The dataset audit (`audit`): leaks across splits, suspected wrong labels, outliers.

    from pipeline.audit.run import run_audit
    folder = run_audit("cache/<store>.h5")

`neighbours.py` finds exact nearest neighbours and near-duplicate pairs in row blocks,
`labels.py` ranks label issues (out-of-sample probabilities, cleanlab), `report.py` writes the
self-contained report.html and `run.py` ties them together; what fit-head and grid-search
read back of an audit is `pipeline.evaluation.exclusions`. It reads the store, never a backbone.
"""
