"""A real loopback HTTP server speaking the part of the Hugging Face Hub API that huggingface_hub uses.

Endpoints (as called by huggingface_hub 2.x, see hf_api.py `model_info` and file_download.py
`get_hf_file_metadata` / `hf_hub_download`):

- `GET /api/models/{owner}/{name}` and `/api/models/{owner}/{name}/revision/{rev}`: `id`, `sha`,
  `siblings` (`rfilename`, `size`, `blobId`), `private`, `gated`.
- `HEAD|GET /{owner}/{name}/resolve/{rev}/{path}`: `X-Repo-Commit`, `ETag`, `Content-Length`,
  `Accept-Ranges`; `Range: bytes=a-b` answers 206 with `Content-Range`.

Per-repo behaviour: "ok", "gated" (401 + `X-Error-Code: GatedRepo`), "missing" (404 +
`X-Error-Code: RepoNotFound`), "rate_limited" (429). Unknown revisions answer 404
`RevisionNotFound`, unknown files 404 `EntryNotFound`. Files are bytes or paths (served by seeking,
never loaded whole). Every request is logged with the bytes it sent, so tests can check that only a
header was read.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

Behaviour = Literal["ok", "gated", "missing", "rate_limited"]


@dataclass
class Repo:
    files: dict[str, bytes | Path]
    sha: str
    behaviour: Behaviour = "ok"
    revisions: set[str] = field(default_factory=set)

    def size(self, name: str) -> int:
        f = self.files[name]
        return len(f) if isinstance(f, bytes) else f.stat().st_size

    def read(self, name: str, start: int, stop: int) -> bytes:
        f = self.files[name]
        if isinstance(f, bytes):
            return f[start:stop]
        with open(f, "rb") as fh:
            fh.seek(start)
            return fh.read(stop - start)

    def etag(self, name: str) -> str:
        return hashlib.sha256(f"{self.sha}/{name}/{self.size(name)}".encode()).hexdigest()


@dataclass
class LoggedRequest:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


class HubServer:
    """Start with `start()`, point HF_ENDPOINT at `url`, add repos with `add_repo`, `stop()` at the end."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        behaviour: Behaviour = "ok",
        sha: str | None = None,
        revisions: set[str] | None = None,
    ) -> Repo:
        sha = sha or hashlib.sha1(repo_id.encode()).hexdigest()
        repo = Repo(dict(files), sha, behaviour, set(revisions or ()))
        self.repos[repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def bytes_sent(self, path_contains: str) -> int:
        with self._lock:
            return sum(r.body_bytes for r in self.log if path_contains in r.path)

    def start(self) -> HubServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self, head=False)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # --- request handling --------------------------------------------------------------------------
    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str],
        *,
        head: bool,
        content_length: int | None = None,
    ) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        h.end_headers()
        sent = 0
        if not head:
            h.wfile.write(body)
            sent = len(body)
        with self._lock:
            self.log.append(LoggedRequest(h.command, h.path, h.headers.get("Range"), status, sent))

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str | None, msg: str, *, head: bool) -> None:
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = msg
        self._send(h, status, json.dumps({"error": msg}).encode(), headers, head=head)

    def _repo_gate(self, h: BaseHTTPRequestHandler, repo_id: str, *, head: bool) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None or repo.behaviour == "missing":
            self._error(h, 404, "RepoNotFound", "Repository not found", head=head)
            return None
        if repo.behaviour == "gated":
            self._error(h, 401, "GatedRepo", "Access to this model is restricted.", head=head)
            return None
        if repo.behaviour == "rate_limited":
            self._error(h, 429, None, "Too Many Requests", head=head)
            return None
        return repo

    def _rev_ok(self, repo: Repo, rev: str) -> bool:
        return rev in ("main", repo.sha) or rev in repo.revisions

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        m = re.match(r"^/api/models/([^/]+/[^/]+?)(?:/revision/(.+))?$", path)
        if m:
            repo = self._repo_gate(h, m.group(1), head=head)
            if repo is None:
                return
            rev = m.group(2) or "main"
            if not self._rev_ok(repo, rev):
                self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
                return
            info = {
                "id": m.group(1),
                "modelId": m.group(1),
                "sha": repo.sha,
                "private": False,
                "gated": False,
                "siblings": [
                    {"rfilename": n, "size": repo.size(n), "blobId": repo.etag(n)[:40]} for n in sorted(repo.files)
                ],
            }
            self._send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head=head)
            return
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if not m:
            self._error(h, 404, None, f"no route for {path}", head=head)
            return
        repo = self._repo_gate(h, m.group(1), head=head)
        if repo is None:
            return
        rev, name = m.group(2), m.group(3)
        if not self._rev_ok(repo, rev):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
            return
        if name not in repo.files:
            self._error(h, 404, "EntryNotFound", f"{name} does not exist", head=head)
            return
        size = repo.size(name)
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{repo.etag(name)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        rng = h.headers.get("Range")
        if rng:
            rm = re.match(r"^bytes=(\d+)-(\d*)$", rng.strip())
            if not rm or int(rm.group(1)) >= size:
                headers["Content-Range"] = f"bytes */{size}"
                self._send(h, 416, b"", headers, head=head)
                return
            start = int(rm.group(1))
            stop = min(int(rm.group(2)) + 1, size) if rm.group(2) else size
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            body = b"" if head else repo.read(name, start, stop)
            self._send(h, 206, body, headers, head=head, content_length=stop - start)
            return
        body = b"" if head else repo.read(name, 0, size)
        self._send(h, 200, body, headers, head=head, content_length=size)
