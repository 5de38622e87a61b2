"""A loopback stand-in for Kaggle's HTTP API, enough for the real `kaggle` CLI (2.2.5) to push kernels and
upload datasets (docs/kaggle.md). The CLI is pointed at it with KAGGLE_API_ENVIRONMENT=LOCALHOST plus
HTTP_PROXY=http://127.0.0.1:<port>: every call arrives as `POST http://localhost/api/v1/<service>/<Method>` with a
JSON body; blob uploads arrive as `PUT` to the URL that StartBlobUpload returned.
"""
from __future__ import annotations
import json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULTS = {
    'SaveKernel': (200, {'ref': '/code/tester/aimo2-submission', 'url': 'https://www.kaggle.com/code/tester/aimo2-submission',
                         'versionNumber': 3}),
    'GetDatasetStatus': (404, {'error': 'not found'}),
    'CreateDataset': (200, {'status': 'ok', 'url': 'https://www.kaggle.com/datasets/tester/aimo2-wheels', 'ref': 'tester/aimo2-wheels'}),
    'CreateDatasetVersion': (200, {'status': 'ok', 'url': 'https://www.kaggle.com/datasets/tester/aimo2-wheels', 'ref': 'tester/aimo2-wheels'}),
}


class KaggleStub:
    "Records every request; answers from `responses` (method name -> (status, JSON body))."
    def __init__(self, responses: dict | None = None):
        self.responses = {**DEFAULTS, **(responses or {})}
        self.requests: list[dict] = []
        self.uploads: dict[str, bytes] = {}
        self._n = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def _body(self) -> bytes:
                n = int(self.headers.get('Content-Length') or 0)
                return self.rfile.read(n) if n else b''
            def _send(self, status: int, body: dict | None = None):
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(data)))
                self.end_headers(); self.wfile.write(data)
            def do_POST(self):
                path = urlsplit(self.path).path
                raw = self._body()
                try: body = json.loads(raw or b'{}')
                except ValueError: body = {'_raw': raw.decode('utf-8', 'replace')}
                name = path.rstrip('/').split('/')[-1]
                stub.requests.append({'method': 'POST', 'path': path, 'name': name, 'body': body, 'headers': dict(self.headers)})
                if name == 'StartBlobUpload':
                    stub._n += 1
                    tok = f"blob-token-{stub._n}"
                    return self._send(200, {'token': tok, 'createUrl': f"http://localhost/upload/{tok}"})
                status, resp = stub.responses.get(name, (200, {}))
                self._send(status, resp)
            def do_PUT(self):
                path = urlsplit(self.path).path
                data = self._body()
                stub.requests.append({'method': 'PUT', 'path': path, 'name': 'PUT', 'body': len(data), 'headers': dict(self.headers)})
                stub.uploads[path.rsplit('/', 1)[-1]] = data
                self._send(200, {})
            def do_GET(self):
                stub.requests.append({'method': 'GET', 'path': urlsplit(self.path).path, 'name': 'GET', 'body': None, 'headers': dict(self.headers)})
                self._send(404, {'error': 'not found'})

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start(); return self
    def __exit__(self, *exc):
        self.server.shutdown(); self.server.server_close()

    def names(self) -> list[str]:
        return [r['name'] for r in self.requests]
    def body(self, name: str) -> dict:
        return next(r['body'] for r in self.requests if r['name'] == name)

    def env(self, home: str) -> dict:
        "Environment for the kaggle CLI: this stub as the API, fake credentials, a throwaway HOME."
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(('KAGGLE_', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'ALL_PROXY'))}
        proxy = f"http://127.0.0.1:{self.port}"
        env.update(HOME=home, KAGGLE_CONFIG_DIR=os.path.join(home, '.kaggle'), KAGGLE_API_ENVIRONMENT='LOCALHOST',
                   KAGGLE_USERNAME='tester', KAGGLE_KEY='0123456789abcdef0123456789abcdef',
                   HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY='', no_proxy='')
        return env
