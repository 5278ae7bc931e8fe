"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1 for tests: the endpoints huggingface_hub calls
for create_repo, create_branch, preupload, commit, repo info and file download. State lives in memory; `fail`
injects an HTTP status for one endpoint ("create", "preupload", "commit")."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, int] = {}
        self.token = "hf_test_token"
        self.requests: list[str] = []


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def make_handler(state: HubState, base_url: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
            payload = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _authorised(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {state.token}"

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _injected(self, name: str) -> bool:
            if name in state.fail:
                self._send(state.fail[name], {"error": f"injected {name} failure"})
                return True
            return False

        def do_POST(self) -> None:  # noqa: N802
            state.requests.append(f"POST {self.path}")
            body = self._body()
            if not self._authorised():
                return self._send(401, {"error": "Invalid credentials"}, {"X-Error-Message": "Invalid credentials"})
            if self.path == "/api/validate-yaml":  # create_commit checks a README's metadata first
                return self._send(200, {"errors": [], "warnings": []})
            if self.path == "/api/repos/create":
                if self._injected("create"):
                    return
                data = json.loads(body)
                repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                if repo_id in state.repos:
                    return self._send(409, {"error": "You already created this model repo", "url": f"{base_url}/{repo_id}"})
                state.repos[repo_id] = {"private": data.get("private", False), "branches": {"main": {"files": {}, "sha": _sha(repo_id.encode())}}}
                return self._send(200, {"url": f"{base_url}/{repo_id}", "name": repo_id})
            match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/([^?]+)(\?.*)?", self.path)
            if not match or match.group(1) not in state.repos:
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            repo = state.repos[match.group(1)]
            action, revision = match.group(2), match.group(3)
            if action == "branch":
                repo["branches"].setdefault(revision, json.loads(json.dumps(repo["branches"]["main"])))
                return self._send(200, {})
            if self._injected(action):
                return
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]})
            branch = repo["branches"].get(revision)
            if branch is None:
                return self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
            staged = dict(branch["files"])
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    staged[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            branch["files"] = staged  # applied whole, or not at all
            branch["sha"] = _sha(json.dumps(sorted((k, _sha(v)) for k, v in staged.items())).encode())
            repo.setdefault("commits", {})[branch["sha"]] = branch
            repo_id = match.group(1)
            return self._send(200, {"commitUrl": f"{base_url}/{repo_id}/commit/{branch['sha']}", "commitOid": branch["sha"]})

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(f"{self.command} {self.path}")
            info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^?]+))?(\?.*)?", self.path)
            if info:
                repo = state.repos.get(info.group(1))
                if repo is None:
                    return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                branch = repo["branches"][info.group(2) or "main"]
                return self._send(200, {"id": info.group(1), "modelId": info.group(1), "sha": branch["sha"], "private": repo["private"],
                                        "siblings": [{"rfilename": name, "size": len(data)} for name, data in branch["files"].items()]})
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
            if resolve and resolve.group(1) in state.repos:
                repo = state.repos[resolve.group(1)]
                branch = repo["branches"].get(resolve.group(2)) or repo.get("commits", {}).get(resolve.group(2))
                data = branch["files"].get(resolve.group(3)) if branch else None
                if data is None:
                    return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                return self._send(200, raw=data, headers={"X-Repo-Commit": branch["sha"], "ETag": f'"{_sha(data)}"'})
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

        do_HEAD = do_GET

    return Handler


class LocalHub:
    """`with LocalHub() as hub:` → hub.url, hub.state."""

    def __enter__(self) -> "LocalHub":
        self.state = HubState()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), None)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.server.RequestHandlerClass = make_handler(self.state, self.url)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
