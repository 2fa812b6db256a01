#!/usr/bin/env python3
"""Builds the heavy benchmark model: an MLP 784-1024-1024-10 (ReLU, then softmax) on
MNIST-sized inputs, with weights from a fixed seed, made with the `onnx` helper API. Its
math, not the protocol, is the cost of a request: about 1.9 million multiply-adds per row.

It is 7.4 MB, so it is generated, not committed: models/heavy/model.onnx (ignored by git).
Input "input" FP32 [rows, 784]; outputs "label" INT64 [rows] and "probabilities" FP32
[rows, 10]; the first dimension is dynamic, so requests can be batched.

The deep variant (`deep` as the first argument; models/heavy-deep/model.onnx) is an MLP
64-512x8-10 on digits-sized inputs: about the same math per row on 64 inputs instead of 784,
so a request carries a twelfth of the numbers for the same work (bench/overload.sh uses it so
that its load generator, on the same cores, can offer four times the model's capacity).

Run: python3 models/make_heavy.py [deep] [OUT]   (needs numpy and onnx: scripts/setup dev)
"""
import pathlib
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

SEED = 0
SIZES = [784, 1024, 1024, 10]
DEEP = [64] + [512] * 8 + [10]


def build(out, sizes=SIZES):
    rng = np.random.RandomState(SEED)
    nodes, weights = [], []
    previous = "input"
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        # He initialisation, so activations neither vanish nor blow up through the layers.
        w = (rng.randn(fan_in, fan_out) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.randn(fan_out) * 0.01).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"z{i}"]))
        previous = f"z{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [previous], [f"h{i}"]))
            previous = f"h{i}"
    nodes.append(helper.make_node("Softmax", [previous], ["probabilities"], axis=1))
    nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "heavy_mlp" if sizes == SIZES else "deep_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, sizes[0]])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, sizes[-1]]),
        ],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model.producer_name = "teal models/make_heavy.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    save(model, out)
    print(f"{out}: MLP {'-'.join(map(str, sizes))}, {sum(a * b for a, b in zip(sizes, sizes[1:]))} weights")


if __name__ == "__main__":
    here = pathlib.Path(__file__).resolve().parent
    args = sys.argv[1:]
    deep = bool(args) and args[0] == "deep"
    args = args[1:] if deep else args
    default = here / ("heavy-deep" if deep else "heavy") / "model.onnx"
    build(pathlib.Path(args[0]) if args else default, DEEP if deep else SIZES)
