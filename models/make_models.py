#!/usr/bin/env python3
"""Builds teal's example models from scikit-learn's bundled datasets.

Each version directory gets `model.onnx` (exported with skl2onnx, ZipMap off) and
`reference.json`: the outputs onnxruntime-Python computes for the model's holdout set.
teal checks every version against its reference before the version may take traffic,
and the tests check teal's answers against the same file.

Run from anywhere: python3 models/make_models.py
Needs: scikit-learn, skl2onnx, onnxruntime, numpy (see requirements.txt).
"""
import json
import pathlib

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = pathlib.Path(__file__).resolve().parent
SEED = 0


def export(model, n_features, directory, input_name="input"):
    directory.mkdir(parents=True, exist_ok=True)
    onx = to_onnx(
        model,
        initial_types=[(input_name, FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # Fixed producer metadata keeps regenerated files byte-stable across runs.
    onx.producer_version = "0"
    path = directory / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def write_holdout(path, x, y):
    with path.open("w") as f:
        for row, label in zip(x, y):
            f.write(json.dumps({"features": [float(v) for v in row], "label": int(label)}) + "\n")


def write_reference(model_path, x, directory):
    # One thread, as each of teal's workers runs: tree ensembles sum in another order when
    # ONNX Runtime splits a batch across threads, which moves the last bit of a score.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, {input_name: x})
    reference = {"inputs": {input_name: x.tolist()}, "outputs": {}}
    for name, value in zip(names, outputs):
        reference["outputs"][name] = value.tolist()
    (directory / "reference.json").write_text(json.dumps(reference))


def build(name, x, y, versions, test_size, variants=None):
    x = x.astype(np.float32)
    x_train, x_hold, y_train, y_hold = train_test_split(
        x, y, test_size=test_size, random_state=SEED, stratify=y
    )
    root = HERE / name
    root.mkdir(exist_ok=True)
    write_holdout(root / "holdout.jsonl", x_hold, y_hold)
    for version, model in versions.items():
        model.fit(x_train, y_train)
        directory = root / version
        path = export(model, x.shape[1], directory)
        write_reference(path, x_hold, directory)
        accuracy = float((model.predict(x_hold) == y_hold).mean())
        print(f"{name} {version}: {type(model).__name__} holdout accuracy {accuracy:.4f}")
    # Variants for the gate tests: versions a deployment gate must pass or stop.
    for version, (model, target, input_name) in (variants or {}).items():
        model.fit(x_train, target(y_train))
        directory = root / "variants" / version
        path = export(model, x.shape[1], directory, input_name=input_name)
        write_reference(path, x_hold, directory)
        accuracy = float((model.predict(x_hold) == y_hold).mean())
        print(f"{name} variant {version}: holdout accuracy {accuracy:.4f}")


def mlp(seed):
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=seed),
    )


def main():
    digits = load_digits()
    build(
        "digits",
        digits.data,
        digits.target,
        {
            "v1": LogisticRegression(max_iter=5000, random_state=SEED),
            "v2": mlp(SEED),
        },
        test_size=0.25,
        variants={
            # The same recipe with another seed: a gate must let it through.
            "v2-reseed": (mlp(SEED + 1), lambda y: y, "input"),
            # Trained on shifted labels: it loads and runs, and is wrong.
            "v2-permuted": (mlp(SEED), lambda y: (y + 1) % 10, "input"),
            # Its input is called "pixels": clients sending "input" would break.
            "v2-renamed": (mlp(SEED), lambda y: y, "pixels"),
        },
    )
    cancer = load_breast_cancer()
    build(
        "cancer",
        cancer.data,
        cancer.target,
        {"v1": RandomForestClassifier(n_estimators=40, max_depth=6, random_state=SEED)},
        test_size=0.3,
    )


if __name__ == "__main__":
    main()
