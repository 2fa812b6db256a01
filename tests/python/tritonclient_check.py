"""Drives teal with tritonclient.http, a V2 client teal's authors did not write.

Usage: python3 tests/python/tritonclient_check.py HOST:PORT REPO_ROOT
Exits non-zero with the failed assertion if teal's answers differ from the reference.
"""
import json
import pathlib
import sys

import numpy as np
import tritonclient.http as http
from tritonclient.utils import InferenceServerException


def main():
    url, root = sys.argv[1], pathlib.Path(sys.argv[2])
    client = http.InferenceServerClient(url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "v2")
    assert not client.is_model_ready("no-such-model")

    server = client.get_server_metadata()
    assert server["name"] == "teal", server

    metadata = client.get_model_metadata("digits")
    assert metadata["name"] == "digits"
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], metadata
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"], metadata
    assert set(metadata["versions"]) == {"v1", "v2"}

    rows = [json.loads(line) for line in (root / "models/digits/holdout.jsonl").read_text().splitlines()]
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    for version in ("v1", "v2"):
        reference = json.loads((root / f"models/digits/{version}/reference.json").read_text())
        want_labels = np.array(reference["outputs"]["label"], dtype=np.int64)
        want_probs = np.array(reference["outputs"]["probabilities"], dtype=np.float32)
        for binary in (True, False):
            inp = http.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outputs = [
                http.InferRequestedOutput("label", binary_data=binary),
                http.InferRequestedOutput("probabilities", binary_data=binary),
            ]
            result = client.infer("digits", [inp], model_version=version, outputs=outputs, request_id=f"r-{version}")
            assert result.get_response()["model_version"] == version
            assert result.get_response()["id"] == f"r-{version}"
            assert np.array_equal(result.as_numpy("label"), want_labels), (version, binary)
            assert np.array_equal(result.as_numpy("probabilities"), want_probs), (version, binary)
        # The client's defaults: binary inputs, no outputs named (so all come back binary).
        inp = http.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("digits", [inp], model_version=version)
        assert np.array_equal(result.as_numpy("label"), want_labels)

    # The statistics and model repository extensions, from teal's own counts.
    assert {"statistics", "model_repository"} <= set(client.get_server_metadata()["extensions"])
    stats = client.get_inference_statistics("digits")
    by_version = {s["version"]: s for s in stats["model_stats"]}
    assert set(by_version) == {"v1", "v2"}, stats
    for version, entry in by_version.items():
        success = entry["inference_stats"]["success"]
        assert entry["name"] == "digits" and success["count"] >= 3 and success["ns"] > 0, entry
        assert entry["inference_stats"]["fail"]["count"] == 0, entry
        assert entry["last_inference"] > 1_700_000_000_000, entry  # milliseconds since 1970
        # An in-process version also reports its calls: queue and call time per request,
        # rows as inferences, calls as executions, and the calls by the rows they held.
        timed = entry["inference_stats"]
        assert timed["queue"]["count"] >= 1 and timed["compute_infer"]["ns"] > 0, entry
        assert timed["queue"]["count"] == timed["compute_infer"]["count"], entry
        calls = sum(b["compute_infer"]["count"] for b in entry["batch_stats"])
        rows = sum(b["batch_size"] * b["compute_infer"]["count"] for b in entry["batch_stats"])
        assert calls == entry["execution_count"] and rows == entry["inference_count"], entry
    one = client.get_inference_statistics("digits", "v2")
    assert [s["version"] for s in one["model_stats"]] == ["v2"], one
    every = client.get_inference_statistics()
    assert {"digits", "cancer"} <= {s["name"] for s in every["model_stats"]}, every
    index = client.get_model_repository_index()
    assert {"name": "digits", "version": "v1", "state": "READY", "reason": ""} in index, index
    assert {"name": "cancer", "version": "v1", "state": "READY", "reason": ""} in index, index
    try:
        client.get_inference_statistics("no-such-model")
        raise AssertionError("statistics of an unknown model must be refused")
    except InferenceServerException as e:
        assert e.status() == "404", e.status()

    inp = http.InferInput("wrong_name", [1, 64], "FP32")
    inp.set_data_from_numpy(x[:1])
    try:
        client.infer("digits", [inp])
        raise AssertionError("a wrong input name must be refused")
    except InferenceServerException as e:
        assert e.status() == "400", e.status()
        assert "unknown input 'wrong_name'" in e.message(), e.message()
    print("tritonclient: all checks passed")


if __name__ == "__main__":
    main()
