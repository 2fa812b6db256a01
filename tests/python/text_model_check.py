"""Drives teal's text model (models/reviews, a BYTES input) with tritonclient over HTTP, in
binary and JSON form, and over gRPC, clients teal's authors did not write.

Usage: python3 tests/python/text_model_check.py HTTP_HOST:PORT GRPC_HOST:PORT REPO_ROOT
The model is served under the name "digits" (the tests' model name), v1 and v2.
"""
import json
import pathlib
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def main():
    http_url, grpc_url, root = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    rows = [json.loads(l) for l in (root / "models/reviews/holdout.jsonl").read_text().splitlines()]
    texts = np.array([[r["features"][0].encode()] for r in rows], dtype=np.object_)
    http = httpclient.InferenceServerClient(http_url)
    grpc = grpcclient.InferenceServerClient(grpc_url)
    for version in ("v1", "v2"):
        reference = json.loads((root / f"models/reviews/{version}/reference.json").read_text())
        want_labels = np.array(reference["outputs"]["label"], dtype=np.int64)
        want_probs = np.array(reference["outputs"]["probabilities"], dtype=np.float32)
        for binary in (True, False):
            inp = httpclient.InferInput("input", list(texts.shape), "BYTES")
            inp.set_data_from_numpy(texts, binary_data=binary)
            out = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
            result = http.infer("digits", [inp], model_version=version, outputs=out)
            assert np.array_equal(result.as_numpy("label"), want_labels), (version, binary)
            assert np.array_equal(result.as_numpy("probabilities"), want_probs), (version, binary)
        inp = grpcclient.InferInput("input", list(texts.shape), "BYTES")
        inp.set_data_from_numpy(texts)
        result = grpc.infer("digits", [inp], model_version=version)
        assert np.array_equal(result.as_numpy("label"), want_labels), version
        assert np.array_equal(result.as_numpy("probabilities"), want_probs), version
    metadata = grpc.get_model_metadata("digits", as_json=True)
    assert metadata["inputs"][0]["datatype"] == "BYTES", metadata
    print("all checks passed")


if __name__ == "__main__":
    main()
