"""Registers model versions in an MLflow tracking server, as a team would, for the source tests.

Usage (with the Python of .deps/mlflow):
  mlflow_registry.py TRACKING_URI onnx NAME FILE        logs FILE with the ONNX flavour, registers
                                                         it under NAME; prints the version
  mlflow_registry.py TRACKING_URI sklearn NAME [C]      logs a small scikit-learn model (no ONNX
                                                         flavour; logistic regression on iris with
                                                         regularisation C, default 1.0, and its
                                                         signature), registers it; prints the version
  mlflow_registry.py TRACKING_URI alias NAME ALIAS VER  points ALIAS at version VER
  mlflow_registry.py TRACKING_URI iris-holdout FILE     writes every fifth iris row, with its
                                                         label, as a holdout file for the gates
"""
import sys

import mlflow
from mlflow import MlflowClient

uri, what = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
if what == "onnx":
    import onnx

    name, path = sys.argv[3], sys.argv[4]
    with mlflow.start_run():
        info = mlflow.onnx.log_model(onnx.load(path), name="model", registered_model_name=name)
    print(info.registered_model_version)
elif what == "sklearn":
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    c = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    model = LogisticRegression(C=c, max_iter=500).fit(x, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=sys.argv[3],
            signature=infer_signature(x, model.predict(x)),
        )
    print(info.registered_model_version)
elif what == "iris-holdout":
    import json

    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    with open(sys.argv[3], "w") as out:
        for features, label in list(zip(x.tolist(), y.tolist()))[::5]:
            out.write(json.dumps({"features": features, "label": label}) + "\n")
    print("ok")
elif what == "alias":
    MlflowClient().set_registered_model_alias(sys.argv[3], sys.argv[4], sys.argv[5])
    print("ok")
else:
    sys.exit(f"unknown command {what}")
