"""A small model server on onnxruntime-Python, for tests that need a server with faults.

It serves one ONNX model over V2 REST or the simple JSON protocol, and can be told to be
slow (--delay-ms) or to fail a share of requests (--error-rate), the way a degraded model
server would. teal's tests start it as a `process` slot or point an `upstream` slot at it.

Usage: python3 onnx_model_server.py --port N --model PATH [--name digits] [--version v]
       [--protocol v2|json] [--delay-ms MS] [--error-rate R] [--seed N] [--fail-when FILE]
       [--trace-log FILE]

--seed N picks which requests --error-rate fails (the same N, the same requests; 0 unless
given), so repeated runs can each draw their own.

--fail-when FILE makes every inference fail with a 500 while FILE exists: a fault that
appears on cue (after a switch, say), without depending on timing.
"""
import os
import argparse
import json
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort

DTYPES = {"tensor(float)": ("FP32", np.float32), "tensor(double)": ("FP64", np.float64), "tensor(int64)": ("INT64", np.int64)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="digits")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--protocol", default="v2", choices=["v2", "json"])
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-when", default=None)
    parser.add_argument("--trace-log", default=None, help="append each inference's traceparent header to this file")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    lock = threading.Lock()
    inputs = [{"name": i.name, "datatype": DTYPES[i.type][0], "shape": [d if isinstance(d, int) else -1 for d in i.shape]} for i in session.get_inputs()]
    outputs = [{"name": o.name, "datatype": DTYPES[o.type][0], "shape": [d if isinstance(d, int) else -1 for d in o.shape]} for o in session.get_outputs()]
    rng = random.Random(args.seed)

    def run(x):
        with lock:
            return session.run(None, {inputs[0]["name"]: x.astype(np.float32)})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Headers and body go out in two writes; without this, Nagle's algorithm and the
            # client's delayed ACK add 40 ms to every answer on a kept-alive connection.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *a):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path in ("/health", "/v2/health/ready", "/v2/health/live", f"/v2/models/{args.name}/ready"):
                return self.reply(200, {"ready": True})
            if self.path == f"/v2/models/{args.name}":
                return self.reply(200, {"name": args.name, "versions": [args.version], "platform": "onnxruntime", "inputs": inputs, "outputs": outputs})
            self.reply(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            if args.trace_log:
                with open(args.trace_log, "a") as log:
                    log.write((self.headers.get("traceparent") or "-") + "\n")
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000)
            with lock:
                fail = rng.random() < args.error_rate
            if fail or (args.fail_when and os.path.exists(args.fail_when)):
                return self.reply(500, {"error": "injected failure"})
            if args.protocol == "json" and self.path == "/predict":
                labels, _ = run(np.array(body["features"], dtype=np.float32))
                return self.reply(200, {"prediction": labels.tolist()})
            if args.protocol == "v2" and self.path == f"/v2/models/{args.name}/infer":
                tensor = body["inputs"][0]
                x = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
                results = run(x)
                answer = [{"name": o["name"], "datatype": o["datatype"], "shape": list(r.shape), "data": r.flatten().tolist()} for o, r in zip(outputs, results)]
                return self.reply(200, {"model_name": args.name, "model_version": args.version, "outputs": answer})
            self.reply(404, {"error": f"no route {self.path}"})

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"serving {args.model} as {args.name} {args.version} ({args.protocol}) on port {args.port}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
