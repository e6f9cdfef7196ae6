"""A static file server for URL-input tests, on 127.0.0.1 and a free port (printed).

GET /<name>       the file under ROOT (404 JSON if absent), with Content-Length
GET /drop/<name>  the first request of each name sends the headers and half the
                  body, then drops the connection; later ones serve it whole
PUT /<name>       stores the body under ROOT (the bench's plain-upload baseline)
Usage: python3 media_server.py ROOT
"""
import http.server
import os
import sys

ROOT = sys.argv[1]
dropped = set()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0].lstrip("/")
        drop = path.startswith("drop/")
        name = path[len("drop/"):] if drop else path
        full = os.path.join(ROOT, os.path.basename(name))
        if not os.path.isfile(full):
            body = b'{"error":"not found"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with open(full, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if drop and name not in dropped:
            dropped.add(name)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data)


    def do_PUT(self):
        name = os.path.basename(self.path.split("?", 1)[0])
        left = int(self.headers.get("Content-Length", "0"))
        with open(os.path.join(ROOT, name), "wb") as f:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                f.write(chunk)
                left -= len(chunk)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
