"""A small MLServer runtime for an ONNX model, for bench/batching.sh.

MLServer 1.7.1 has no ONNX runtime of its own (its runtimes are scikit-learn, XGBoost,
LightGBM, MLflow, Hugging Face, ...), so this one loads the file named by the model's
`parameters.uri` with ONNX Runtime, one session per MLServer worker, with the session
options teal uses for an in-process slot with `intra_op_threads = 1`: one intra-op thread,
one inter-op thread, sequential execution, every graph optimisation. It decodes each V2
input with MLServer's NumpyCodec (`self.decode`), runs the session, and answers every output
of the model, each with the V2 datatype of its numpy dtype and the model's own shape (INT64
[rows] for "label", FP32 [rows, 10] for "probabilities" on models/heavy).

With adaptive batching on (max_batch_size and max_batch_time in model-settings.json),
MLServer merges the queued requests into one before `predict` is called and splits the
answer by rows afterwards; this class sees only the merged request.

Use it with "implementation": "mlserver_onnx.OnnxModel" and this folder on PYTHONPATH.
"""
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

# ONNX Runtime element types to numpy ones, for the inputs this runtime accepts.
_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class OnnxModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name: _NUMPY.get(i.type) for i in self._session.get_inputs()}
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {}
        for request_input in payload.inputs:
            if request_input.name not in self._inputs:
                raise ValueError(f"unknown input {request_input.name!r}; the model takes {sorted(self._inputs)}")
            array = self.decode(request_input, default_codec=NumpyCodec)
            dtype = self._inputs[request_input.name]
            feeds[request_input.name] = np.ascontiguousarray(array, dtype=dtype) if dtype else array
        results = self._session.run(self._outputs, feeds)
        outputs = []
        for name, value in zip(self._outputs, results):
            output = NumpyCodec.encode_output(name, value)
            # NumpyCodec answers a 1-D array [rows] with the shape [rows, 1]; the model's
            # output is [rows], and adaptive batching splits either by its first dimension.
            output.shape = list(value.shape)
            outputs.append(output)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
