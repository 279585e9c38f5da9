"""A tiny Hugging Face Hub-compatible HTTP server for tests, standard library only.

`huggingface_hub` (and so `transformers`) talks to it through `HF_ENDPOINT`, with its real client code paths:
`create_repo`, `create_branch`, `create_commit` (preupload + NDJSON commit, every file in "regular" mode),
`model_info`, `list_repo_tree`, and `hf_hub_download` (HEAD + GET of `/{repo}/resolve/{revision}/{file}` with the
`X-Repo-Commit` / `ETag` / `X-Error-Code` headers the client relies on). It listens on 127.0.0.1 only, answers
at most `max_requests` requests and stops by itself after `lifetime_s` seconds.

Not covered (see docs/hub.md): LFS and Xet uploads and downloads (clients must run with `HF_HUB_DISABLE_XET=1`;
the server answers "regular" to every preupload so no LFS object is ever sent), pull requests (`create_pr`),
dataset and Space repos, access control beyond "write calls need a bearer token", and the Hub's metadata
validation (`/api/validate-yaml` only checks that a YAML front matter block is closed).

```python
>>> with FakeHub() as hub:  # doctest: +SKIP
...     env = hub.client_env(hf_home)  # HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET, ... for a subprocess
```
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub"]

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file's content (what the Hub reports as the oid / ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    """One model repository: named branches pointing at commits, each commit a full snapshot of the files."""

    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))

    def resolve(self, revision: str) -> str | None:
        """The commit of a branch name or of a (full) commit id, None if unknown."""
        if revision in self.branches:
            return self.branches[revision]
        return revision if _COMMIT_RE.match(revision) and revision in self.commits else None


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.commit = status, message, error_code, commit


class FakeHub:
    """In-memory Hub on `http://127.0.0.1:<free port>`; use as a context manager (or `start()` / `stop()`).

    Args:
        lifetime_s: the server shuts itself down after this many seconds, whatever happens to the test.
        max_requests: requests beyond this number are answered 503 (a runaway client cannot spin forever).
        max_body_bytes: larger request bodies are refused with 413.
    """

    def __init__(self, lifetime_s: float = 600, max_requests: int = 5000, max_body_bytes: int = 64 * 2**20):
        self.lifetime_s, self.max_requests, self.max_body_bytes = lifetime_s, max_requests, max_body_bytes
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.validated_yaml: list[str] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent; also called by the lifetime timer)."""
        with self._lock:
            server, already, self._stopped = self._server, self._stopped, True
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if server is not None and not already:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_env(self, hf_home: str | os.PathLike, **extra: str) -> dict[str, str]:
        """Environment for a client process: this endpoint, a token, no Xet, a private HF_HOME, online."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": "hf_fake_token_for_tests",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HOME": str(hf_home),
            "OMP_NUM_THREADS": "1",  # tiny models: contended torch threads only slow them down
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **extra,
        }

    # ------------------------------------------------------------------ state (for assertions)
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of `repo_id` at a branch or commit."""
        with self._lock:
            repo = self.repos[repo_id]
            return dict(repo.commits[repo.resolve(revision)])

    def head(self, repo_id: str, branch: str = "main") -> str:
        with self._lock:
            return self.repos[repo_id].branches[branch]

    # ------------------------------------------------------------------ operations
    def _new_commit(self, repo: Repo, parent: str | None, tree: dict[str, bytes], message: str) -> str:
        self._counter += 1
        digest = hashlib.sha1(f"{repo.repo_id}\n{parent}\n{message}\n{self._counter}".encode())
        for path in sorted(tree):
            digest.update(f"{path}\0{git_blob_sha1(tree[path])}\n".encode())
        sha = digest.hexdigest()
        repo.commits[sha], repo.messages[sha] = tree, message
        return sha

    def _repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def create_repo(self, body: dict) -> tuple[int, dict]:
        if body.get("type", "model") != "model":
            raise HubError(400, "The fake hub only serves model repos.")
        name, namespace = body.get("name"), body.get("organization") or "user"
        if not name or "/" in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        repo_id = f"{namespace}/{name}"
        url = {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", **url}
        repo = Repo(repo_id, private=body.get("visibility") == "private" or bool(body.get("private")))
        repo.branches["main"] = self._new_commit(repo, None, {".gitattributes": _GITATTRIBUTES}, "initial commit")
        self.repos[repo_id] = repo
        return 200, url

    def create_branch(self, repo_id: str, branch: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        repo.branches[branch] = self._commit_of(repo, body.get("startingPoint") or "main")
        return 200, {}

    def preupload(self, repo_id: str, revision: str, body: dict) -> dict:
        repo = self._repo(repo_id)
        tree = repo.commits.get(repo.resolve(revision) or "", {})
        files = []
        for item in body.get("files", []):
            path = item["path"]
            files.append(
                {
                    "path": path,
                    "uploadMode": "regular",  # never "lfs": LFS/Xet uploads are not implemented
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(tree[path]) if path in tree else None,
                }
            )
        return {"files": files, "commitOid": repo.resolve(revision)}

    def commit(self, repo_id: str, revision: str, body: bytes, query: dict) -> dict:
        repo = self._repo(repo_id)
        if query.get("create_pr"):
            raise HubError(501, "The fake hub does not implement pull requests (create_pr).")
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision} (commits go to branches)", "RevisionNotFound")
        parent = repo.branches[revision]
        tree = dict(repo.commits[parent])
        summary = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                if value.get("parentCommit") not in (None, parent):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                tree[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in tree:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del tree[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {path: data for path, data in tree.items() if not path.startswith(prefix)}
            else:  # lfsFile (never requested by this server), copies, ...
                raise HubError(422, f"The fake hub does not implement {key!r} commit operations (LFS/Xet, copies).")
        sha = self._new_commit(repo, parent, tree, summary)
        repo.branches[revision] = sha
        return {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    def model_info(self, repo_id: str, revision: str) -> dict:
        repo = self._repo(repo_id)
        sha = self._commit_of(repo, revision)
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.created_at,
            "lastModified": repo.created_at,
            "siblings": [{"rfilename": path} for path in sorted(repo.commits[sha])],
        }

    def tree(self, repo_id: str, revision: str, path: str, recursive: bool) -> list[dict]:
        repo = self._repo(repo_id)
        files = repo.commits[self._commit_of(repo, revision)]
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append({"type": "file", "oid": git_blob_sha1(files[name]), "size": len(files[name]), "path": name})
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": folder} for folder in sorted(folders)]
        return entries

    def resolve_file(self, repo_id: str, revision: str, path: str) -> tuple[str, bytes]:
        repo = self._repo(repo_id)
        sha = self._commit_of(repo, revision)
        files = repo.commits[sha]
        if path not in files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=sha)
        return sha, files[path]


_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/branch/(?P<rev>[^/]+)$"), "branch"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "model_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]
_WRITES = {"create_repo", "preupload", "commit", "branch"}


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a connection may stay idle: a stuck client cannot hold a thread forever

    def log_message(self, format, *args):  # quiet: requests are recorded in `hub.requests`
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        status = 500
        try:
            if length > hub.max_body_bytes:
                raise HubError(413, f"Request body of {length} bytes is over the fake hub's limit")
            body = self.rfile.read(length) if length else b""
            with hub._lock:
                if len(hub.requests) >= hub.max_requests:
                    raise HubError(503, "The fake hub answered its maximum number of requests")
            matches = ((action, pattern.match(split.path)) for verb, pattern, action in _ROUTES if verb == method)
            route = next(((action, m) for action, m in matches if m), None)
            if route is None:
                raise HubError(404, f"The fake hub does not implement {method} {split.path}")
            action, match = route
            if action in _WRITES and not (self.headers.get("authorization") or "").startswith("Bearer "):
                raise HubError(401, "Invalid credentials in Authorization header")
            groups = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
            with hub._lock:
                status = self._act(action, groups, body, query, method)
        except HubError as error:
            status = error.status
            headers = {"X-Error-Message": error.message}
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            self._send(status, json.dumps({"error": error.message}).encode(), headers, method)
        except Exception as error:  # a bug in the fake hub: report it to the client and the test
            self._send(500, json.dumps({"error": f"fake hub error: {error!r}"}).encode(), {}, method)
        finally:
            with hub._lock:
                hub.requests.append((method, self.path, status))

    def _act(self, action: str, groups: dict, body: bytes, query: dict, method: str) -> int:
        hub = self.hub
        repo_id, rev = groups.get("repo"), groups.get("rev") or "main"
        if action == "create_repo":
            status, payload = hub.create_repo(json.loads(body or b"{}"))
        elif action == "validate_yaml":
            content = json.loads(body or b"{}").get("content", "")
            hub.validated_yaml.append(content)
            status, payload = 200, {"errors": [], "warnings": []}
            if content.startswith("---") and "\n---" not in content[3:]:
                status, payload = 400, {"errors": [{"message": "unterminated YAML front matter"}], "warnings": []}
        elif action == "preupload":
            status, payload = 200, hub.preupload(repo_id, rev, json.loads(body or b"{}"))
        elif action == "commit":
            status, payload = 200, hub.commit(repo_id, rev, body, query)
        elif action == "branch":
            status, payload = hub.create_branch(repo_id, rev, json.loads(body or b"{}"))
        elif action == "model_info":
            status, payload = 200, hub.model_info(repo_id, rev)
        elif action == "tree":
            status, payload = 200, hub.tree(repo_id, rev, groups.get("path") or "", query.get("recursive") == "true")
        else:  # resolve
            sha, content = hub.resolve_file(repo_id, rev, groups["path"])
            headers = {
                "X-Repo-Commit": sha,
                "ETag": f'"{git_blob_sha1(content)}"',
                "Content-Type": "application/octet-stream",
            }
            self._send(200, content, headers, method)
            return 200
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"}, method)
        return status

    def _send(self, status: int, content: bytes, headers: dict, method: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(content)
