"""Drives teal's gRPC listener with tritonclient.grpc, a client teal's authors did not write,
and with the stub tritonclient generates from Triton's own proto (for typed contents and the
response metadata, which tritonclient's helpers do not expose).

Usage: python3 tests/python/tritonclient_grpc_check.py GRPC_HOST:PORT ADMIN_URL TOKEN REPO_ROOT
Checks metadata, readiness, predictions against the reference (raw and typed contents), bad
input with its status code, the slot header, and 100 switches under load on one HTTP/2
connection: no failed request, and every request answered by a route table no older than the
one live when it started (so every request after a switch is served by the new slot).
Exits non-zero with the failed assertion.
"""
import json
import pathlib
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException


def main():
    url, admin, token, root = sys.argv[1], sys.argv[2], sys.argv[3], pathlib.Path(sys.argv[4])
    client = tc.InferenceServerClient(url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "v2")
    assert not client.is_model_ready("digits", "v9")

    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "teal", server
    metadata = client.get_model_metadata("digits", as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx", metadata
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}], metadata
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"], metadata
    assert set(metadata["versions"]) == {"v1", "v2"}, metadata

    rows = [json.loads(line) for line in (root / "models/digits/holdout.jsonl").read_text().splitlines()]
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    stub = client._client_stub  # the generated stub on the client's one channel
    for version in ("v1", "v2"):
        reference = json.loads((root / f"models/digits/{version}/reference.json").read_text())
        want_labels = np.array(reference["outputs"]["label"], dtype=np.int64)
        want_probs = np.array(reference["outputs"]["probabilities"], dtype=np.float32)
        # Raw contents, as tritonclient sends them.
        inp = tc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("digits", [inp], model_version=version, request_id=f"r-{version}")
        assert result.get_response().model_version == version
        assert result.get_response().id == f"r-{version}"
        assert np.array_equal(result.as_numpy("label"), want_labels), version
        assert np.array_equal(result.as_numpy("probabilities"), want_probs), version
        # One output asked for.
        result = client.infer("digits", [inp], model_version=version,
                              outputs=[tc.InferRequestedOutput("probabilities")])
        assert [o.name for o in result.get_response().outputs] == ["probabilities"]
        # Typed contents.
        request = service_pb2.ModelInferRequest(model_name="digits", model_version=version)
        tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
        response = stub.ModelInfer(request)
        labels = np.frombuffer(response.raw_output_contents[0], dtype=np.int64)
        assert [o.name for o in response.outputs] == ["label", "probabilities"]
        assert np.array_equal(labels, want_labels), version

    # The served version and slot come back as response metadata; the slot header applies.
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(x[0].tolist())
    response, call = stub.ModelInfer.with_call(request, metadata=(("x-teal-slot", "green"),))
    got = dict(call.initial_metadata())
    assert got.get("x-teal-slot") == "green" and got.get("x-teal-version") == "v2", got
    assert response.model_version == "v2"
    assert got.get("x-request-id"), got

    # The statistics and model repository extensions.
    stats = client.get_inference_statistics("digits", as_json=True)
    versions = {s["version"]: s for s in stats["model_stats"]}
    assert set(versions) == {"v1", "v2"}, stats
    assert int(versions["v1"]["inference_stats"]["success"]["count"]) >= 3, stats
    assert int(versions["v1"]["last_inference"]) > 1_700_000_000_000, stats
    # In-process versions also report their calls: queue and call time per request, rows as
    # inferences, calls as executions, and the calls by the rows they held.
    for entry in versions.values():
        timed = entry["inference_stats"]
        assert int(timed["queue"]["count"]) >= 1 and int(timed["compute_infer"]["ns"]) > 0, entry
        assert int(timed["queue"]["count"]) == int(timed["compute_infer"]["count"]), entry
        calls = sum(int(b["compute_infer"]["count"]) for b in entry["batch_stats"])
        rows = sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in entry["batch_stats"])
        assert calls == int(entry["execution_count"]) and rows == int(entry["inference_count"]), entry
    one = client.get_inference_statistics("digits", "v2", as_json=True)
    assert [s["version"] for s in one["model_stats"]] == ["v2"], one
    index = client.get_model_repository_index(as_json=True)
    assert {"name": "digits", "version": "v1", "state": "READY"} in [
        {k: m[k] for k in ("name", "version", "state")} for m in index["models"]
    ], index
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: client.get_inference_statistics("no-such-model"), "no-such-model")

    bad_input(client, stub, x)
    switches_under_load(url, admin, token, x)
    assert client.is_server_live() and client.is_model_ready("digits")
    print("all checks passed")


def expect_code(code, call, *words):
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        for word in words:
            assert word in e.details(), (word, e.details())
        return
    except InferenceServerException as e:
        assert e.status() == str(code), (e.status(), e.message())
        for word in words:
            assert word in e.message(), (word, e.message())
        return
    raise AssertionError(f"expected {code}")


def bad_input(client, stub, x):
    # Wrong datatype.
    wrong = tc.InferInput("input", [1, 64], "FP64")
    wrong.set_data_from_numpy(x[:1].astype(np.float64))
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.infer("digits", [wrong]), "FP64", "FP32")
    # Wrong shape.
    narrow = tc.InferInput("input", [1, 3], "FP32")
    narrow.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.infer("digits", [narrow]), "[1, 3]")
    # Raw bytes that do not match the shape.
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(x[0].tobytes())
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(request), "input")
    # Typed contents in the wrong field.
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    tensor.contents.fp64_contents.extend([0.0] * 64)
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(request), "fp32_contents")
    # Unknown model, unknown version, no model name.
    good = tc.InferInput("input", [1, 64], "FP32")
    good.set_data_from_numpy(x[:1])
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: client.infer("no-such-model", [good]), "no-such-model")
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: client.infer("digits", [good], model_version="v9"), "v9")
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: client.get_model_metadata("no-such-model"), "no-such-model")
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.ModelInfer(service_pb2.ModelInferRequest()), "model")
    # The classification extension, which teal does not serve, is refused, not ignored.
    expect_code(grpc.StatusCode.INVALID_ARGUMENT,
                lambda: client.infer("digits", [good], outputs=[tc.InferRequestedOutput("probabilities", class_count=3)]),
                "classification")
    # A message over the size limit (4 MiB by default).
    big = np.zeros((20000, 64), dtype=np.float32)
    large = tc.InferInput("input", list(big.shape), "FP32")
    large.set_data_from_numpy(big)
    expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: client.infer("digits", [large]), "max_body_bytes")
    # Still serving.
    assert client.infer("digits", [good]).as_numpy("label").shape == (1,)


def switches_under_load(url, admin, token, x):
    """Four threads share one channel (one HTTP/2 connection) while the admin API switches
    digits 100 times. Generation 1 is the start and each switch adds one."""
    channel = grpc.insecure_channel(url)
    from tritonclient.grpc import service_pb2_grpc
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    status = json.loads(admin_call(admin, token, "GET", "/api/v1/models/digits"))
    first = status["live"]
    other = "green" if first == "blue" else "blue"
    base = int(status.get("generation", 1))
    state = {"completed": base, "issued": base, "done": False}
    lock = threading.Lock()
    failures, served = [], [0]

    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(x[0].tobytes())

    def load():
        count = 0
        while not state["done"] and count < 100_000:
            floor = state["completed"]
            try:
                _, call = stub.ModelInfer.with_call(request, timeout=30)
            except grpc.RpcError as e:
                with lock:
                    failures.append(f"{e.code()}: {e.details()}")
                continue
            ceiling = state["issued"]
            count += 1
            generation = int(dict(call.initial_metadata()).get("x-teal-route-generation", 0))
            if not floor <= generation <= ceiling:
                with lock:
                    failures.append(f"generation {generation} outside [{floor}, {ceiling}]")
        with lock:
            served[0] += count

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for flip in range(100):
        to = other if flip % 2 == 0 else first
        state["issued"] = base + flip + 1
        answer = json.loads(admin_call(admin, token, "POST", "/api/v1/models/digits/switch", {"to": to}))
        assert answer["generation"] == base + flip + 1, answer
        state["completed"] = base + flip + 1
        time.sleep(0.005)  # requests run on each table; correctness does not depend on how many
    state["done"] = True
    for t in threads:
        t.join(timeout=60)
    channel.close()
    assert not failures, failures[:5]
    assert served[0] > 100, served
    print(f"switches under load: 100 switches, {served[0]} requests on one connection, 0 failed")


def admin_call(admin, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(admin + path, data=data, method=method)
    request.add_header("authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


if __name__ == "__main__":
    main()
