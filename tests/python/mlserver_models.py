"""Writes two scikit-learn versions of the digits model for MLServer, plus what they predict.

Usage: python mlserver_models.py OUT_DIR REPO_ROOT
Run with the Python that has mlserver-sklearn (its scikit-learn reads the joblib files).
Makes OUT_DIR/v1 (LogisticRegression, as models/make_models.py trains it) and OUT_DIR/v2
(LogisticRegression with stronger regularisation), each a folder `mlserver start` serves,
and OUT_DIR/expected.json: the holdout rows and each version's predicted labels.
"""
import json
import pathlib
import sys

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

out, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
digits = load_digits()
x = digits.data.astype(np.float32)
x_train, x_hold, y_train, y_hold = train_test_split(
    x, digits.target, test_size=0.25, random_state=0, stratify=digits.target
)
versions = {
    "v1": LogisticRegression(max_iter=5000, random_state=0),
    "v2": LogisticRegression(C=0.001, max_iter=5000, random_state=0),
}
rows = x_hold[:60]
expected = {"rows": rows.tolist(), "labels": {}}
for version, model in versions.items():
    model.fit(x_train, y_train)
    folder = out / version
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "digits",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": version},
    }))
    expected["labels"][version] = model.predict(rows.astype(np.float64)).tolist()
assert expected["labels"]["v1"] != expected["labels"]["v2"], "the versions must be told apart"
(out / "expected.json").write_text(json.dumps(expected))
