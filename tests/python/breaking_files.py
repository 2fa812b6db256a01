"""A file server whose downloads break off, for the test of resumed downloads.

    breaking_files.py PORT ROOT LOG

Serves the files under ROOT with a strong ETag and honours `Range: bytes=N-` with `If-Range`,
as HTTP servers and object stores do. The first whole-file GET of each path announces the
whole Content-Length, sends half the bytes and closes the connection. A path under
`/changing/` is served from ROOT without that prefix, but with a new ETag on every request, as
a file replaced between two attempts would be: an `If-Range` never matches it, so it is sent
whole. Each request is appended to LOG as a JSON line: path, range, if_range, status, sent, etag.
"""

import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, root, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
broken = set()
requests = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        global requests
        requests += 1
        path = self.path.split("?", 1)[0]
        changing = path.startswith("/changing/")
        relative = path[len("/changing") :] if changing else path
        file = os.path.realpath(os.path.join(root, relative.lstrip("/")))
        if not file.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(file):
            self.send_error(404)
            return
        data = open(file, "rb").read()
        digest = hashlib.sha256(data).hexdigest()[:16]
        etag = f'"{digest}-{requests}"' if changing else f'"{digest}"'
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        start = 0
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-") and if_range == etag:
            start = int(wanted[len("bytes=") : -1])
        if start >= len(data) and start > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.note(path, wanted, if_range, 416, 0, None)
            return
        status = 206 if start > 0 else 200
        self.send_response(status)
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start > 0:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if start == 0 and path not in broken:
            broken.add(path)
            half = len(data) // 2
            self.wfile.write(data[:half])
            self.wfile.flush()
            self.note(path, wanted, if_range, status, half, etag)
            self.close_connection = True
            return
        self.wfile.write(data[start:])
        self.note(path, wanted, if_range, status, len(data) - start, etag)

    def note(self, path, wanted, if_range, status, sent, etag):
        with open(log, "a") as f:
            f.write(json.dumps({"path": path, "range": wanted, "if_range": if_range, "status": status, "sent": sent, "etag": etag}) + "\n")


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
