"""Trains digits v1 exactly as models/make_models.py does and saves it for MLServer.

Usage: python mlserver_model.py OUT_DIR REPO_ROOT
Checks that its predictions equal teal's reference labels, so both servers run the same model.
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
x_train, x_hold, y_train, _ = train_test_split(x, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
model = LogisticRegression(max_iter=5000, random_state=0).fit(x_train, y_train)
reference = json.loads((root / "models/digits/v1/reference.json").read_text())
assert (model.predict(x_hold) == np.array(reference["outputs"]["label"])).all(), "not the same model as teal's digits v1"
out.mkdir(parents=True, exist_ok=True)
joblib.dump(model, out / "model.joblib")
(out / "model-settings.json").write_text(json.dumps({
    "name": "digits",
    "implementation": "mlserver_sklearn.SKLearnModel",
    "parameters": {"uri": "./model.joblib", "version": "v1"},
}))
