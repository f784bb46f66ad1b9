"""A grid-search winner that is a scikit-learn pipeline, as ONNX behind the backbone's graph.

The pipeline (scaler, PCA, SVM, k-NN, forest, ...) is converted by skl2onnx and joined behind
the ONNX graph of preprocessing + backbone (`onnx.compose.merge_models`), so one ONNX file
goes from uint8 pixels to the run's probabilities. A model without `predict_proba` (an SVM
fit without probability=True) scores like `predict` does: a softmax of its decision function
(binary: of [-d, d] / 2); which output column of the converted graph carries d is measured
on real vectors, never assumed. What the converter cannot take is refused with the family's
name; the exported file is then checked end to end like every other export.

Usage:
    join_sklearn_winner(best, backbone_onnx_path, out_path, features_sample)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError

OPSET = 17  # the default ONNX opset of both converters' graphs here; both graphs must agree
_PREFIX = "head_"
OUTPUT = "run_probabilities"  # a name neither converter uses ("probabilities" is skl2onnx's)


def _refuse(best, reason: str) -> ConfigError:
    return ConfigError(
        f"the best model of this grid-search run is {best.name} (family {best.family}), which "
        f"cannot be exported as ONNX here: {reason}. Score files with predict (it works with "
        "every model), or run grid-search with a family that converts (k-NN, random forest, "
        "the SVMs, logistic regression, the Keras head).")


def convert_pipeline(best, features: np.ndarray):
    """The winner's scikit-learn pipeline as an ONNX model: float32 features in, the run's
    probabilities out (output OUTPUT). Raises ConfigError naming the family."""
    import onnx
    from onnx import helper
    from skl2onnx import to_onnx

    pipeline = best.pipeline
    if best.head is not None or pipeline is None:
        raise _refuse(best, "it is not a scikit-learn pipeline")
    if list(best.classes) != list(range(len(best.class_names))):
        raise _refuse(best, f"it was fit on {len(best.classes)} of the store's "
                      f"{len(best.class_names)} classes")
    x = np.asarray(features, np.float32).reshape(len(features), -1)
    try:
        model = to_onnx(pipeline, x[:1], options={"zipmap": False}, target_opset=OPSET)
    except Exception as exc:  # the converter's own errors name no family: we add it
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise _refuse(best, f"skl2onnx refused it ({type(exc).__name__}: {first})") from None
    scores_name = model.graph.output[1].name  # (label, probabilities or decision scores)
    if hasattr(pipeline, "predict_proba"):
        del model.graph.output[0]  # the label output: the artifact returns probabilities only
        return _renamed_output(model, scores_name)
    decision = np.asarray(pipeline.decision_function(x), np.float64)
    raw = _run(model, x)[1]
    nodes = []
    if decision.ndim == 1:
        column = int(np.argmin([np.abs(raw[:, c] - decision).max() for c in range(raw.shape[1])]))
        if np.abs(raw[:, column] - decision).max() > 1e-4:
            raise _refuse(best, "its converted decision function does not match scikit-learn's")
        nodes += [helper.make_node("Gather", [scores_name, "dfcol"], ["d"], axis=1),
                  helper.make_node("Mul", ["d", "half"], ["d_half"]),
                  helper.make_node("Neg", ["d_half"], ["minus_d_half"]),
                  helper.make_node("Concat", ["minus_d_half", "d_half"], ["scores"], axis=1)]
        inits = [onnx.numpy_helper.from_array(np.array([column], np.int64), "dfcol"),
                 onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    else:
        if np.abs(raw - decision).max() > 1e-4:
            raise _refuse(best, "its converted decision function does not match scikit-learn's")
        nodes.append(helper.make_node("Identity", [scores_name], ["scores"]))
        inits = []
    nodes.append(helper.make_node("Softmax", ["scores"], [OUTPUT], axis=1))
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    out = helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT,
                                        [None, len(best.class_names)])
    del model.graph.output[:]
    model.graph.output.append(out)
    return model


def _renamed_output(model, name: str):
    """The graph with its one output called OUTPUT."""
    from onnx import helper

    model.graph.node.append(helper.make_node("Identity", [name], [OUTPUT]))
    model.graph.output[0].name = OUTPUT
    return model


def _run(model, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def join_behind(backbone_path: Path, head_model, out: Path) -> None:
    """Writes one ONNX file: the backbone graph's output feeds the head graph's input."""
    import onnx
    from onnx import compose

    backbone = onnx.load(str(backbone_path))
    head = compose.add_prefix(head_model, _PREFIX)
    # merge_models needs one IR version and one version per opset domain in both graphs. The
    # backbone graph declares ai.onnx.ml without using it: it takes the head's version; a
    # domain both graphs use takes the newer version.
    used = {n.domain for n in backbone.graph.node}
    versions = {o.domain: o.version for o in head.opset_import}
    for entry in backbone.opset_import:
        if entry.domain in used or entry.domain not in versions:
            versions[entry.domain] = max(entry.version, versions.get(entry.domain, 0))
    for graph in (backbone, head):
        del graph.opset_import[:]
        graph.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    ir = max(backbone.ir_version, head.ir_version)
    backbone.ir_version = head.ir_version = ir
    joined = compose.merge_models(
        backbone, head, io_map=[(backbone.graph.output[0].name, head.graph.input[0].name)],
        outputs=[_PREFIX + OUTPUT])
    onnx.checker.check_model(joined)
    onnx.save(joined, str(out))
