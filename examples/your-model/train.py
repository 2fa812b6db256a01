#!/usr/bin/env python3
"""Trains a scikit-learn classifier and exports it for teal: the path docs/your-model.md walks.

  python train.py OUT            wine-v1.onnx, a retrain wine-v2.onnx, and holdout.csv in OUT
  python train.py OUT --zipmap   also wine-zipmap.onnx, exported as skl2onnx does by default
                                 (with ZipMap), which `teal init` refuses with advice

Needs scikit-learn, skl2onnx and onnx (in teal's checkout: scripts/setup dev puts them in .venv).
"""
import argparse
import csv
import pathlib

from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def export(model, n_features, path, zipmap=False):
    onx = to_onnx(
        model,
        # None: any number of rows per request.
        initial_types=[("input", FloatTensorType([None, n_features]))],
        # ZipMap off: the probabilities are one FP32 [rows, classes] tensor, not a list of maps.
        options=None if zipmap else {id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path.write_bytes(onx.SerializeToString())
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--zipmap", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    data = load_wine()
    x = data.data.astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.3, random_state=0, stratify=data.target
    )

    # Version 1, and a retrain with another regularisation: the new version teal rolls out.
    v1 = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000)).fit(x_train, y_train)
    v2 = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(x_train, y_train)
    for name, model in (("v1", v1), ("v2", v2)):
        print(f"{name}: accuracy on the holdout {model.score(x_test, y_test):.3f}")
        export(model, x.shape[1], args.out / f"wine-{name}.onnx")
    if args.zipmap:
        export(v1, x.shape[1], args.out / "wine-zipmap.onnx", zipmap=True)

    # The holdout: the features in the order the model was trained on, the label last.
    with (args.out / "holdout.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*data.feature_names, "label"])
        for row, label in zip(x_test, y_test):
            writer.writerow([*(float(v) for v in row), int(label)])
    print(f"wrote {args.out / 'holdout.csv'} ({len(y_test)} rows)")


if __name__ == "__main__":
    main()
