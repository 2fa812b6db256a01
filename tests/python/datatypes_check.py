"""Every V2 datatype through teal, with tritonclient over HTTP (binary and JSON) and gRPC.

Usage:
  python3 tests/python/datatypes_check.py make MODEL_PATH
      writes an ONNX model (with the onnx helper API) that answers each input unchanged:
      in_T -> out_T for every datatype T, shape [-1, 3]
  python3 tests/python/datatypes_check.py check HTTP_HOST:PORT [GRPC_HOST:PORT]
      sends every datatype to the model "types" and checks each comes back as sent
"""
import sys

import ml_dtypes  # bfloat16 for numpy, as tritonclient takes BF16 (installed with onnx)
import numpy as np

TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
         "FP16", "BF16", "FP32", "FP64", "BYTES"]


def make(path):
    from onnx import TensorProto as T, helper, save
    onnx_types = {"BOOL": T.BOOL, "UINT8": T.UINT8, "UINT16": T.UINT16, "UINT32": T.UINT32,
                  "UINT64": T.UINT64, "INT8": T.INT8, "INT16": T.INT16, "INT32": T.INT32,
                  "INT64": T.INT64, "FP16": T.FLOAT16, "BF16": T.BFLOAT16, "FP32": T.FLOAT,
                  "FP64": T.DOUBLE, "BYTES": T.STRING}
    nodes, inputs, outputs = [], [], []
    for name in TYPES:
        low = name.lower()
        nodes.append(helper.make_node("Identity", [f"in_{low}"], [f"out_{low}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{low}", onnx_types[name], [None, 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{low}", onnx_types[name], [None, 3]))
    graph = helper.make_graph(nodes, "types", inputs, outputs)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), path)


def values():
    """Two rows per datatype, with each type's extremes."""
    return {
        "BOOL": np.array([[True, False, True], [False, False, True]]),
        "UINT8": np.array([[0, 255, 7], [1, 2, 3]], dtype=np.uint8),
        "UINT16": np.array([[0, 65535, 7], [1, 2, 3]], dtype=np.uint16),
        "UINT32": np.array([[0, 2**32 - 1, 7], [1, 2, 3]], dtype=np.uint32),
        "UINT64": np.array([[0, 2**64 - 1, 7], [1, 2, 3]], dtype=np.uint64),
        "INT8": np.array([[-128, 127, 0], [1, -2, 3]], dtype=np.int8),
        "INT16": np.array([[-32768, 32767, 0], [1, -2, 3]], dtype=np.int16),
        "INT32": np.array([[-2**31, 2**31 - 1, 0], [1, -2, 3]], dtype=np.int32),
        "INT64": np.array([[-2**63, 2**63 - 1, 0], [1, -2, 3]], dtype=np.int64),
        "FP16": np.array([[1.5, -2.25, 65504], [0.0, 0.5, -1.0]], dtype=np.float16),
        "BF16": np.array([[1.5, -2.0, 0.25], [8.0, -0.5, 3.0]], dtype=ml_dtypes.bfloat16),
        "FP32": np.array([[1.5, -2.25, 3.4e38], [0.0, 1e-30, -1.0]], dtype=np.float32),
        "FP64": np.array([[1.5, -2.25, 1e300], [0.0, 1e-300, -1.0]], dtype=np.float64),
        "BYTES": np.array([[b"a", b"", "h\u00e9llo".encode()], [b"x y", b"1", b"\t"]], dtype=np.object_),
    }


def check(http_url, grpc_url):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    data = values()
    http = httpclient.InferenceServerClient(http_url)
    metadata = http.get_model_metadata("types")
    assert [i["datatype"] for i in metadata["inputs"]] == TYPES, metadata
    for binary in (True, False):
        inputs = []
        for name in TYPES:
            tensor = httpclient.InferInput(f"in_{name.lower()}", [2, 3], name)
            # tritonclient sends BF16 in binary form only.
            tensor.set_data_from_numpy(data[name], binary_data=binary or name == "BF16")
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput(f"out_{n.lower()}", binary_data=binary or n == "BF16")
                   for n in TYPES]
        result = http.infer("types", inputs, outputs=outputs)
        for name in TYPES:
            got = result.as_numpy(f"out_{name.lower()}")
            assert got is not None, (name, binary, result.get_response())
            if name == "BYTES" and not binary:
                # JSON carries BYTES as strings, which tritonclient gives back as str.
                got = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(got)
            assert np.array_equal(got, data[name]), (name, binary, got, data[name])
            output = result.get_output(f"out_{name.lower()}")
            assert output["datatype"] == name, (name, output)
    print(f"http {http_url}: every datatype in binary and JSON form")
    if grpc_url:
        grpc = grpcclient.InferenceServerClient(grpc_url)
        inputs = []
        for name in TYPES:
            tensor = grpcclient.InferInput(f"in_{name.lower()}", [2, 3], name)
            tensor.set_data_from_numpy(data[name])
            inputs.append(tensor)
        result = grpc.infer("types", inputs)
        for name in TYPES:
            got = result.as_numpy(f"out_{name.lower()}")
            assert np.array_equal(got, data[name]), (name, got, data[name])
        print(f"grpc {grpc_url}: every datatype")
    print("all checks passed")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
