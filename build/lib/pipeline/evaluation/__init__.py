"""How a model is judged, shared by fit-head, grid-search and the audit (and importing none).

`splits.py` makes honest splits (stratified, group-aware, per-class checks), `checks.py` the
data checks said out loud (groups across sides, copied vectors, tiny data), `exclusions.py`
reads the rows an audit asks to leave out, `curves.py` the learning curve and `calibration.py`
temperature scaling and its figures. Nothing here builds a model or reads a backbone.
"""
