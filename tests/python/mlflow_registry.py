"""Registers model versions in an MLflow tracking server, as a team would, for the source tests.

Usage (with the Python of .deps/mlflow):
  mlflow_registry.py TRACKING_URI onnx NAME FILE        logs FILE with the ONNX flavour, registers
                                                         it under NAME; prints the version
  mlflow_registry.py TRACKING_URI sklearn NAME          logs a small scikit-learn model (no ONNX
                                                         flavour), registers it; prints the version
  mlflow_registry.py TRACKING_URI alias NAME ALIAS VER  points ALIAS at version VER
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
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression(max_iter=500).fit(x, y), name="model", registered_model_name=sys.argv[3]
        )
    print(info.registered_model_version)
elif what == "alias":
    MlflowClient().set_registered_model_alias(sys.argv[3], sys.argv[4], sys.argv[5])
    print("ok")
else:
    sys.exit(f"unknown command {what}")
