"""Registers model versions in an MLflow tracking server, as a team would, for the source tests.

Usage (with the Python of .deps/mlflow):
  mlflow_registry.py TRACKING_URI COMMAND [ARGS...] [+ COMMAND [ARGS...]]...

Several commands may be given, separated by "+": MLflow takes seconds to import, so a test
that registers several versions does it in one process. Each command prints its answer on a
line of its own that starts with "= " (MLflow prints links to its runs on other lines).

  onnx NAME FILE          logs FILE with the ONNX flavour, registers it under NAME; answers
                          the version
  sklearn NAME [C]        logs a small scikit-learn model (no ONNX flavour; logistic
                          regression on iris with regularisation C, default 1.0, and its
                          signature), registers it; answers the version
  alias NAME ALIAS VER    points ALIAS at version VER; answers ok
  iris-holdout FILE       writes every fifth iris row, with its label, as a holdout file for
                          the gates; answers ok
"""
import json
import sys

import mlflow
from mlflow import MlflowClient


def onnx_version(name, path):
    import onnx

    with mlflow.start_run():
        info = mlflow.onnx.log_model(onnx.load(path), name="model", registered_model_name=name)
    return info.registered_model_version


def sklearn_version(name, c="1.0"):
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(C=float(c), max_iter=500).fit(x, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            signature=infer_signature(x, model.predict(x)),
        )
    return info.registered_model_version


def iris_holdout(path):
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    with open(path, "w") as out:
        for features, label in list(zip(x.tolist(), y.tolist()))[::5]:
            out.write(json.dumps({"features": features, "label": label}) + "\n")
    return "ok"


def alias(name, alias_name, version):
    MlflowClient().set_registered_model_alias(name, alias_name, version)
    return "ok"


COMMANDS = {"onnx": onnx_version, "sklearn": sklearn_version, "iris-holdout": iris_holdout, "alias": alias}

uri, rest = sys.argv[1], sys.argv[2:]
commands, current = [], []
for arg in rest + ["+"]:
    if arg == "+":
        if current:
            commands.append(current)
        current = []
    else:
        current.append(arg)
for what, *args in commands:
    if what not in COMMANDS:
        sys.exit(f"unknown command {what}")
mlflow.set_tracking_uri(uri)
for what, *args in commands:
    print(f"= {COMMANDS[what](*args)}", flush=True)
