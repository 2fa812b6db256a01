#!/usr/bin/env python3
"""Builds teal's example models from scikit-learn's bundled datasets.

Each version directory gets `model.onnx` (exported with skl2onnx, ZipMap off) and
`reference.json`: the outputs onnxruntime-Python computes for the model's holdout set.
teal checks every version against its reference before the version may take traffic,
and the tests check teal's answers against the same file.

Run from anywhere: python3 models/make_models.py [dataset ...]
(no dataset builds them all; naming some rebuilds only those).
Needs: scikit-learn, skl2onnx, onnxruntime, numpy (see requirements.txt and
requirements-dev.txt), best in a virtual environment of its own, e.g.
  python3 -m venv .deps/models
  .deps/models/bin/pip install scikit-learn==1.9.1 skl2onnx==1.20.0 onnx==1.23.2 \
      onnxruntime==1.31.1 numpy==2.4.6 scipy==1.17.1
  .deps/models/bin/python models/make_models.py
"""
import os
import platform

# The fits go through OpenBLAS, whose kernels (picked per CPU) and single-threaded path
# each round differently: the digits models come out other bytes, and digits v1 other
# labels, unless the kernel and the thread count are the ones the bundled files were
# made with. Set before numpy loads OpenBLAS.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ["OPENBLAS_CORETYPE"] = "Haswell"
os.environ["OPENBLAS_NUM_THREADS"] = "2"

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
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
        options={id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None,
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
    fitted = {}
    for version, model in versions.items():
        model.fit(x_train, y_train)
        directory = root / version
        path = export(model, x.shape[1], directory)
        write_reference(path, x_hold, directory)
        accuracy = float((model.predict(x_hold) == y_hold).mean())
        print(f"{name} {version}: {type(model).__name__} holdout accuracy {accuracy:.4f}")
        fitted[version] = model
    # Variants for the gate tests: versions a deployment gate must pass or stop.
    for version, (model, target, input_name) in (variants or {}).items():
        model.fit(x_train, target(y_train))
        directory = root / "variants" / version
        path = export(model, x.shape[1], directory, input_name=input_name)
        write_reference(path, x_hold, directory)
        accuracy = float((model.predict(x_hold) == y_hold).mean())
        print(f"{name} variant {version}: holdout accuracy {accuracy:.4f}")
        fitted[version] = model
    return fitted, x_hold, y_hold


def compare(name, live, candidate, x_hold, y_hold):
    """Prints how two versions' labels agree on the holdout, and who is right where not."""
    a, b = live[1].predict(x_hold), candidate[1].predict(x_hold)
    differ = a != b
    print(
        f"{name} {live[0]} vs {candidate[0]}: labels agree on {int((~differ).sum())}/{len(y_hold)};"
        f" of the {int(differ.sum())} where they differ, {live[0]} is right on"
        f" {int((a[differ] == y_hold[differ]).sum())}, {candidate[0]} on"
        f" {int((b[differ] == y_hold[differ]).sum())}"
    )


def mlp(seed):
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=seed),
    )


def build_diabetes():
    """A regressor, for the output watch on numbers: v1, and v2-offset, the same recipe
    trained on targets a pipeline bug moved up by 60 (a sixth of their range), so it loads,
    runs and answers every input 60 too high. No holdout: its labels are not classes."""
    data = load_diabetes()
    x = data.data.astype(np.float32)
    x_train, x_hold, y_train, _ = train_test_split(x, data.target, test_size=0.25, random_state=SEED)
    root = HERE / "diabetes"
    for version, target, directory in [
        ("v1", y_train, root / "v1"),
        ("v2-offset", y_train + 60.0, root / "variants" / "v2-offset"),
    ]:
        model = LinearRegression().fit(x_train, target)
        path = export(model, x.shape[1], directory)
        write_reference(path, x_hold, directory)
        print(f"diabetes {version}: mean answer {float(model.predict(x_hold).mean()):.1f}")


REVIEW_WORDS = {
    1: ["great", "excellent", "love", "perfect", "sturdy", "fast", "comfortable", "recommend",
        "works", "happy", "quality", "bright", "quiet", "reliable", "gorgeous"],
    0: ["broken", "terrible", "awful", "slow", "refund", "cheap", "flimsy", "returned",
        "disappointed", "noisy", "leaks", "useless", "worst", "faulty", "dull"],
}
REVIEW_FILLER = ["the", "this", "it", "product", "arrived", "was", "is", "and", "very", "after",
                 "a", "week", "box", "battery", "screen", "price", "for", "my", "kitchen", "kids",
                 "really", "not", "so", "but", "with", "day", "use", "shipping", "color", "size"]


def reviews(n, rng):
    """Made-up product reviews (scikit-learn ships no text dataset offline): a few words of
    the review's sentiment among filler, and one word of the other sentiment in a fifth of
    them, so the classes overlap and versions can differ."""
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.randint(2))
        words = list(rng.choice(REVIEW_FILLER, size=rng.randint(4, 10)))
        words += list(rng.choice(REVIEW_WORDS[label], size=rng.randint(1, 3)))
        if rng.rand() < 0.2:
            words.append(rng.choice(REVIEW_WORDS[1 - label]))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return np.array(texts, dtype=object), np.array(labels)


def build_reviews():
    """A text classifier (TF-IDF and logistic regression) whose input is a string tensor
    [rows, 1] (BYTES on the wire): v1 on words, v2 on words and word pairs, and the variant
    v2-flipped, trained on flipped labels, which loads, runs and is wrong."""
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer

    x, y = reviews(1600, np.random.RandomState(SEED))
    x_train, x_hold, y_train, y_hold = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    root = HERE / "reviews"
    root.mkdir(exist_ok=True)
    with (root / "holdout.jsonl").open("w") as f:
        for text, label in zip(x_hold, y_hold):
            f.write(json.dumps({"features": [str(text)], "label": int(label)}) + "\n")

    def recipe(ngrams, c):
        return make_pipeline(
            # lowercase off: the exported StringNormalizer would need the en_US.UTF-8 locale
            # on every machine that serves it (the reviews are lowercase already).
            TfidfVectorizer(ngram_range=ngrams, token_pattern=r"[a-z]+", lowercase=False),
            LogisticRegression(C=c, max_iter=1000, random_state=SEED),
        )

    x_rows = x_hold.reshape(-1, 1)
    for version, model, target, directory in [
        ("v1", recipe((1, 1), 1.0), y_train, root / "v1"),
        ("v2", recipe((1, 2), 4.0), y_train, root / "v2"),
        ("v2-flipped", recipe((1, 2), 4.0), 1 - y_train, root / "variants" / "v2-flipped"),
    ]:
        model.fit(x_train, target)
        directory.mkdir(parents=True, exist_ok=True)
        onx = to_onnx(
            model,
            initial_types=[("input", StringTensorType([None, 1]))],
            options={id(model.steps[-1][1]): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        onx.producer_version = "0"
        path = directory / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        write_reference(path, x_rows, directory)
        accuracy = float((model.predict(x_hold) == y_hold).mean())
        print(f"reviews {version}: TF-IDF {model.steps[0][1].ngram_range} + logistic regression, holdout accuracy {accuracy:.4f}")


def main():
    wanted = set(sys.argv[1:])
    unknown = wanted - {"digits", "cancer", "iris", "diabetes", "reviews"}
    if unknown:
        sys.exit(f"unknown dataset {sorted(unknown)}: pick from digits, cancer, iris, diabetes, reviews")
    if wanted == {"diabetes"}:
        build_diabetes()
        return
    if wanted == {"reviews"}:
        build_reviews()
        return
    if wanted and wanted != {"digits", "cancer", "iris", "diabetes", "reviews"}:
        sys.exit("name diabetes or reviews alone, or nothing to build them all")
    build_diabetes()
    build_reviews()
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
    # A change of model family: the forest answers the holdout as well as v1 does (its
    # seed is picked so), with step-shaped probabilities where v1's are smooth.
    iris = load_iris()
    shuffle = np.random.RandomState(SEED).permutation
    fitted, x_hold, y_hold = build(
        "iris",
        iris.data,
        iris.target,
        {"v1": LogisticRegression(max_iter=1000, random_state=SEED)},
        test_size=0.25,
        variants={
            "forest": (
                RandomForestClassifier(n_estimators=30, max_depth=3, random_state=8),
                lambda y: y,
                "input",
            ),
            # v1's recipe on shuffled labels: it loads and runs, and is wrong.
            "shuffled": (LogisticRegression(max_iter=1000, random_state=SEED), shuffle, "input"),
        },
    )
    compare("iris", ("v1", fitted["v1"]), ("forest", fitted["forest"]), x_hold, y_hold)


if __name__ == "__main__":
    main()
