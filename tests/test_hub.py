"""Hub uploads against a local stand-in for the Hub, model and dataset cards, and the cards' usage snippets.

`LocalHub` answers the endpoints that `HfApi.create_repo`, `create_branch` and `upload_folder` call (repo creation,
YAML validation, branch creation, preupload, LFS batch + PUT, NDJSON commit, pull requests), keeps every ref's files,
and records each request's Authorization header. With `hf_xet` disabled the stand-in asks for safetensors as LFS
objects (the legacy commit path); with `hf_xet` enabled (huggingface_hub's default pipeline) it answers "regular" for
every file, since a stand-in for the Xet storage protocol is out of reach.
"""

import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import DatasetCard, ModelCard, constants
from safetensors.torch import load as load_safetensors
from transformers import LlamaForSequenceClassification, LlamaForTokenClassification, TrainingArguments

from ponder.inference.revision import RevisionFormat
from ponder.training.core.hub import push_checkpoint
from ponder.training.core.outputs import write_checkpoint_metadata, write_json_atomic
from ponder.training.policy import main as train_policy
from ponder.training.push import main as push_main
from ponder.training.reporting.cards import model_card
from ponder.training.toy.model import build_model, build_tokenizer
from ponder.training.verifiers.stage import VerifierConfig

TOKEN = "hf_" + "Qx7" * 11 + "Z"  # shaped like a real token (hf_ + 34 characters)
REPO = r"(?P<type>model|dataset)s/(?P<repo>[^/]+/[^/]+)"


class LocalHub(ThreadingHTTPServer):
    """A Hub on 127.0.0.1: repositories as {ref: {path: bytes}}, LFS objects by sha256, and a request log."""

    def __init__(self, lfs_suffixes: tuple[str, ...]):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.url = f"http://127.0.0.1:{self.server_port}"
        self.lfs_suffixes = lfs_suffixes
        self.repos: dict[tuple[str, str], dict[str, dict[str, bytes]]] = {}
        self.visibility: dict[tuple[str, str], str | None] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()

    def files(self, repo_type: str, repo_id: str, ref: str = "main") -> dict[str, bytes]:
        return self.repos[(repo_type, repo_id)][ref]


class HubHandler(BaseHTTPRequestHandler):
    server: LocalHub

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def route(self, method: str):
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.server.requests.append((method, url.path, self.headers.get("Authorization")))
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", rf"/api/{REPO}/branch/(?P<ref>[^/]+)", self.create_branch),
            ("POST", rf"/api/{REPO}/preupload/(?P<ref>[^/]+)", self.preupload),
            ("POST", rf"/api/{REPO}/commit/(?P<ref>[^/]+)", self.commit),
            ("POST", rf"/api/{REPO}/discussions", self.open_pull_request),
            ("GET", rf"/api/{REPO}/discussions/(?P<num>\d+)", self.pull_request),
            ("POST", r"/(?P<prefix>datasets/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", self.lfs_put),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, url.path)
            if route_method == method and match:
                with self.server.lock:
                    return handler(**{k: unquote(v) if v else v for k, v in match.groupdict().items()})
        self.reply({"error": f"no route for {method} {url.path}"}, 404)

    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def reply(self, payload: dict, status: int = 200):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refs(self, type: str, repo: str) -> dict[str, dict[str, bytes]] | None:
        return self.server.repos.get((type, repo))

    def create_repo(self):
        request = json.loads(self.body())
        repo_type, repo_id = request.get("type", "model"), f"{request['organization'] or 'me'}/{request['name']}"
        url = f"{self.server.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        if (repo_type, repo_id) in self.server.repos:  # the Hub names the existing repo in its 409
            return self.reply({"error": "You already created this repo", "url": url}, 409)
        self.server.repos[(repo_type, repo_id)] = {"main": {".gitattributes": b"*.safetensors filter=lfs\n"}}
        self.server.visibility[(repo_type, repo_id)] = request.get("visibility")
        self.reply({"url": url})

    def validate_yaml(self):
        content = json.loads(self.body())["content"]
        yaml.safe_load(content.split("---")[1])
        self.reply({"errors": [], "warnings": []})

    def create_branch(self, type, repo, ref):
        refs = self.refs(type, repo)
        if ref in refs:
            return self.reply({"error": "Reference already exists"}, 409)
        refs[ref] = dict(refs["main"])
        self.reply({})

    def preupload(self, type, repo, ref):
        files = json.loads(self.body())["files"]
        modes = [
            {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(self.server.lfs_suffixes) else "regular",
             "shouldIgnore": False, "oid": None}
            for f in files
        ]  # fmt: skip
        self.reply({"files": modes})

    def lfs_batch(self, prefix, repo):
        objects = json.loads(self.body())["objects"]
        upload = [{**o, "actions": {"upload": {"href": f"{self.server.url}/lfs/{o['oid']}"}}} for o in objects]
        self.reply({"transfer": "basic", "objects": upload})

    def lfs_put(self, oid):
        data = self.body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self.reply({"error": "sha256 mismatch"}, 400)
        self.server.lfs[oid] = data
        self.reply({})

    def new_pull_request(self, refs) -> int:
        number = sum(ref.startswith("refs/pr/") for ref in refs) + 1
        refs[f"refs/pr/{number}"] = dict(refs["main"])
        return number

    def open_pull_request(self, type, repo):
        self.reply({"num": self.new_pull_request(self.refs(type, repo))})

    def pull_request(self, type, repo, num):
        self.reply(
            {"title": "push", "num": int(num), "author": {"name": "me"}, "createdAt": "2026-01-01T00:00:00.000Z",
             "status": "draft", "repo": {"name": repo, "type": type}, "isPullRequest": True, "events": [],
             "changes": {"base": "refs/heads/main"}, "filesWithConflicts": []}
        )  # fmt: skip

    def commit(self, type, repo, ref):
        refs = self.refs(type, repo)
        lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        pull_request = self.new_pull_request(refs) if self.query.get("create_pr") == ["1"] else None
        ref = f"refs/pr/{pull_request}" if pull_request else ref
        if refs is None or ref not in refs:
            return self.reply({"error": f"Invalid rev id: {ref}"}, 404)
        for item in lines[1:]:
            value = item["value"]
            if item["key"] == "file":
                refs[ref][value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                refs[ref][value["path"]] = self.server.lfs[value["oid"]]
        oid = hashlib.sha1(json.dumps(lines).encode()).hexdigest()
        pr_url = f"{self.server.url}/{repo}/discussions/{pull_request}" if pull_request else None
        self.reply({"commitUrl": f"{self.server.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": pr_url})


@pytest.fixture(params=[False], ids=["lfs"])
def hub(request, monkeypatch):
    """A running `LocalHub` that huggingface_hub talks to (HF_ENDPOINT) with `TOKEN` (HF_TOKEN)."""
    xet = request.param
    server = LocalHub(lfs_suffixes=() if xet else (".safetensors",))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)  # read once at import
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "0" if xet else "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield server
    server.shutdown()
    server.server_close()


VERIFIER_METADATA = {"task": "arith", "step_delimiter": "\n", "step_tag": None, "prompt_template": "chat",
                     "aggregation": "last", "read": "step_end", "max_length": 512}  # fmt: skip
EVAL_RESULTS = {
    "training": {"steps": 12, "train_seconds": 3.5, "mean_train_loss": 0.41},
    "label_set": {"eval_loss": 0.52, "eval_step_auc": 0.81, "eval_first_error_f1": float("nan"), "eval_runtime": 1.2},
    "oracle": {
        "bon_n": 4,
        "verifier": {"all": {"problems": 6, "samples": 24, "step_auc_within_problem": 0.85, "weighted_bon": 0.83}},
        "policy_likelihood": {
            "all": {"problems": 6, "samples": 24, "step_auc_within_problem": 0.6, "weighted_bon": 0.5}
        },
    },
    "step_auc_within_problem": 0.85,
}
JUNK = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json", ".env",
        "checkpoint-6/model.safetensors", "checkpoint-6/optimizer.pt", "global_step6/mp_rank_00_model_states.pt",
        "runs/events.out.tfevents.1", "adapter/README.md"]  # fmt: skip


def build_checkpoint(folder: Path, kind: str = "prm_token_classification") -> Path:
    """A tiny real checkpoint of `kind` with ponder.json, recipe.yaml (holding a masked hub_token) and a plot."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    heads = {"prm_token_classification": LlamaForTokenClassification, "orm": LlamaForSequenceClassification}
    if kind in heads:
        model.config.num_labels = 1
        model = heads[kind](model.config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    metadata = {"kind": kind, **VERIFIER_METADATA}
    if kind == "revision":
        metadata["revision_format"] = RevisionFormat().to_dict()
    config = VerifierConfig(model_name_or_path="org/base-model", dataset="org/labels", task="arith")
    args = TrainingArguments(output_dir=str(folder), hub_token=TOKEN, max_steps=12, report_to="none")
    write_checkpoint_metadata(folder, metadata, config, args)
    write_json_atomic(folder / "eval_results.json", EVAL_RESULTS)
    (folder / "plots").mkdir()
    (folder / "plots" / "step_auc.png").write_bytes(b"\x89PNG\r\n\x1a\n fake image")
    return folder


def add_junk(folder: Path) -> None:
    for name in JUNK:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not for the Hub " + TOKEN.encode())


def test_model_card_parses_and_carries_the_eval_results(tmp_path):
    card = ModelCard(str(model_card(build_checkpoint(tmp_path), "org/toy-prm")))
    data = card.data
    assert data.library_name == "ponder" and data.license == "apache-2.0"
    assert {"ponder", "process-reward-model", "arith", "toy"} <= set(data.tags)
    assert data.base_model == "org/base-model" and data.datasets == ["org/labels"]
    assert data.pipeline_tag == "token-classification" and data.model_name == "toy-prm"
    metrics = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert metrics == {
        ("test", "step_auc_within_problem"): 0.85,
        ("test", "weighted_bon"): 0.83,
        ("validation", "eval_loss"): 0.52,
        ("validation", "eval_step_auc"): 0.81,
    }  # NaN, counts and runtimes stay out of model-index
    assert "| step_auc_within_problem | 0.85 | 0.6 |" in card.text  # beside the policy-likelihood baseline
    assert "| `max_steps` | `12` |" in card.text and "num_train_epochs" not in card.text
    assert 'load_verifier(snapshot_download("org/toy-prm"))' in card.text


@pytest.mark.parametrize("kind", ["prm_token_classification", "orm", "policy", "revision"])
def test_the_cards_usage_snippet_runs(tmp_path, monkeypatch, capsys, kind):
    folder = build_checkpoint(tmp_path, kind)
    text = model_card(folder, "org/toy").text
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)

    def snapshot_download(repo_id):
        assert repo_id == "org/toy"
        return str(folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    snippet = snippet.replace("max_new_tokens=256", "max_new_tokens=8")  # the untrained model would babble on
    exec(compile(snippet, "usage", "exec"), {})
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("hub", [False, True], ids=["legacy-lfs", "xet-pipeline"], indirect=True)
def test_push_uploads_the_checkpoint_and_nothing_else(hub, tmp_path):
    folder = build_checkpoint(tmp_path)
    expected = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} | {"README.md"}
    add_junk(folder)
    info = push_checkpoint(folder, "org/toy-prm")
    arrived = hub.files("model", "org/toy-prm")
    assert set(arrived) == expected | {".gitattributes"}
    assert info.commit_url.startswith(hub.url)
    weights = (folder / "model.safetensors").read_bytes()
    assert arrived["model.safetensors"] == weights
    assert load_safetensors(weights).keys() == LlamaForTokenClassification.from_pretrained(folder).state_dict().keys()
    if not constants.HF_HUB_DISABLE_XET:
        assert hub.lfs == {}  # every file went inline
    else:
        assert hub.lfs == {hashlib.sha256(weights).hexdigest(): weights}  # the weights went through LFS
    assert all(TOKEN.encode() not in content for content in arrived.values())
    assert b"<HUB_TOKEN>" in arrived["recipe.yaml"]  # TrainingArguments masks it
    assert arrived["README.md"] == (folder / "README.md").read_bytes()
    assert ModelCard(arrived["README.md"].decode()).data.eval_results
    writes = [auth for method, _, auth in hub.requests if method == "POST"]  # LFS PUTs go unauthenticated, like S3
    assert writes and all(auth == f"Bearer {TOKEN}" for auth in writes)


def test_push_to_a_branch_from_the_command_line(hub, tmp_path):
    folder = build_checkpoint(tmp_path)
    command = [sys.executable, "-m", "ponder.training.cli", "push", str(folder), "--repo-id", "org/toy-prm"]
    result = subprocess.run([*command, "--revision", "exp-1", "--private"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"{hub.url}/org/toy-prm/commit/")
    assert "ponder.json" in hub.files("model", "org/toy-prm", "exp-1")
    assert set(hub.files("model", "org/toy-prm")) == {".gitattributes"}
    assert hub.visibility[("model", "org/toy-prm")] == "private"


@pytest.mark.parametrize("hub", [False, True], ids=["legacy-lfs", "xet-pipeline"], indirect=True)
def test_push_opens_a_pull_request(hub, tmp_path):
    info = push_main([str(build_checkpoint(tmp_path)), "--repo-id", "org/toy-prm", "--create-pr"])
    assert info.pr_url and "ponder.json" in hub.files("model", "org/toy-prm", "refs/pr/1")
    assert set(hub.files("model", "org/toy-prm")) == {".gitattributes"}


def test_a_file_holding_a_token_stops_the_push_before_any_request(hub, tmp_path):
    folder = build_checkpoint(tmp_path)
    (folder / "eval.json").write_text(json.dumps({"note": f"pushed with {TOKEN}"}))
    with pytest.raises(ValueError, match="eval.json holds a Hugging Face token"):
        push_checkpoint(folder, "org/toy-prm")
    assert hub.requests == []


def test_a_label_folder_pushes_as_a_dataset_with_its_card(hub, tmp_path):
    rows = [{"id": f"p{i}", "prompt": "0001+0002", "completions": ["0001+0002=0003", "Answer: 0003"],
             "labels": [1.0, 0.75], "hard": [True, True], "rollouts": [8, 8], "answer_correct": True}
            for i in range(5)]  # fmt: skip
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "dataset"))
    stats = {"mode": "per_step", "rows": 5, "positive_step_fraction": 1.0, "oracle_agreement": {"all": {"steps": 10}},
             "config": {"task": "arith", "rollouts": 8, "policy": "outputs/toy/policy"}}  # fmt: skip
    write_json_atomic(tmp_path / "stats.json", stats)
    (tmp_path / "shards").mkdir()
    push_main([str(tmp_path), "--repo-id", "org/toy-labels"])
    arrived = hub.files("dataset", "org/toy-labels")
    assert set(arrived) == {".gitattributes", "README.md", "stats.json", "data/train-00000-of-00001.parquet"}
    (tmp_path / "arrived.parquet").write_bytes(arrived["data/train-00000-of-00001.parquet"])
    assert Dataset.from_parquet(str(tmp_path / "arrived.parquet")).to_list() == rows
    card = DatasetCard(arrived["README.md"].decode())
    assert {"ponder", "process-supervision", "arith", "toy"} <= set(card.data.tags)
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert "| `positive_step_fraction` | 1 |" in card.text and "rollouts: 8" in card.text


def test_a_training_run_with_push_to_hub_pushes_checkpoints_to_branches_and_the_result_to_main(hub, tmp_path):
    train_policy([
        "--config", "recipes/toy/policy.yaml", "--output_dir", str(tmp_path), "--levels", "1",
        "--hidden_size", "16", "--num_layers", "1", "--num_heads", "2", "--intermediate_size", "32",
        "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--warmup_steps", "0",
        "--lr_scheduler_kwargs", '{"num_decay_steps": 1}', "--per_device_train_batch_size", "4",
        "--max_train_minutes", "0", "--eval_problems_per_level", "2", "--eval_samples", "2",
        "--eval_max_new_tokens", "16", "--disable_tqdm", "true",
        "--push_to_hub", "true", "--hub_model_id", "org/toy-policy",
    ])  # fmt: skip
    refs = hub.repos[("model", "org/toy-policy")]
    assert set(refs) == {"main", "checkpoint-2", "checkpoint-4"}
    for ref in ("checkpoint-2", "checkpoint-4"):
        assert {"model.safetensors", "ponder.json", "README.md"} <= set(refs[ref])
        assert not {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"} & set(refs[ref])
    final = refs["main"]
    assert {"model.safetensors", "ponder.json", "eval.json", "README.md"} <= set(final)
    assert yaml.safe_load(final["recipe.yaml"])["push_to_hub"] is True
    assert not any(name.startswith("checkpoint-") or name == "training_args.bin" for name in final)
    assert torch.equal(
        load_safetensors(final["model.safetensors"])["model.embed_tokens.weight"],
        load_safetensors((tmp_path / "model.safetensors").read_bytes())["model.embed_tokens.weight"],
    )
