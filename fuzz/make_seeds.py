"""Writes the seed corpus the fuzz targets start from (run from this folder)."""
import json, os, struct

def put(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data)

row = [0.5, 1.0, 2.0, 3.0]
req = {"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row}]}
put("v2_request", "json", b"\x01" + json.dumps(req).encode())
put("v2_request", "json-nosig", b"\x00" + json.dumps(req).encode())
req2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [row, row]}], "outputs": [{"name": "label"}], "parameters": {"binary_data_output": True}}
put("v2_request", "nested", b"\x01" + json.dumps(req2).encode())
binary = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
header = json.dumps(binary).encode()
put("v2_request", "binary", b"\x03" + struct.pack("<H", len(header)) + header + struct.pack("<4f", *row))
many = {"inputs": [{"name": "a", "datatype": t, "shape": [2], "data": d} for t, d in [("INT64", [1, -2]), ("BOOL", [True, False]), ("FP64", [1e300, -0.0]), ("UINT8", [0, 255]), ("FP16", [1.5, 2])]]}
put("v2_request", "datatypes", b"\x00" + json.dumps(many).encode())

put("simple_json", "rows", json.dumps({"features": [[1, 2, 3], [4, 5, 6]]}).encode())
put("simple_json", "row", json.dumps({"features": [1, 2, 3]}).encode())
put("simple_json", "bools", json.dumps({"features": [[True, 2, 3.5]]}).encode())

resp = {"model_name": "digits", "model_version": "v1", "id": "r1", "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [7]}, {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]}
put("v2_response", "json", b"\x00" + json.dumps(resp).encode())
bresp = {"model_name": "digits", "outputs": [{"name": "label", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}]}
header = json.dumps(bresp).encode()
put("v2_response", "binary", b"\x02" + struct.pack("<H", len(header)) + header + struct.pack("<2q", 3, 4))

# http1_answer: a control byte (bit 0: the answer is to HEAD; the rest: piece size), then an answer.
for name, control, answer in [
    ("length", 0x00, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\ninference-header-content-length: 2\r\n\r\n{\"outputs\":[]}"),
    ("chunked", 0x06, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n"),
    ("continue", 0x02, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"),
    ("until-close", 0x10, b"HTTP/1.0 200 OK\r\n\r\nall of it"),
    ("head", 0x01, b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n"),
    ("no-content", 0x00, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("huge-chunk", 0x00, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nabc"),
    ("length-and-chunked", 0x00, b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("two-lengths", 0x00, b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"),
    ("switching", 0x00, b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"),
]:
    put("http1_answer", name, bytes([control]) + answer)

with open("../examples/teal.toml", "rb") as f:
    put("config", "example", f.read())
put("config", "upstream", b'''[server]
listen = "127.0.0.1:0"
[[model]]
name = "m"
[model.blue]
version = "v1"
kind = "upstream"
urls = ["http://127.0.0.1:9000"]
timeout_ms = 500
[model.green]
version = "v2"
kind = "process"
command = "server --port {port}"
[model.rollout]
strategy = { kind = "canary", steps = [{ percent = 10, pause = "1m" }] }
''')
