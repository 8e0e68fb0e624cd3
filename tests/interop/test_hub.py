"""Hugging Face repo ids as CKPT, offline: a hub cache the test lays out (HF_HUB_CACHE), never the network.

The cache is built as huggingface_hub writes it: ``models--OWNER--NAME/{blobs,snapshots/<commit>,refs/main}``,
snapshot files being links to blobs named by their hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")

import flatkit  # noqa: E402
from flatkit.cli import main  # noqa: E402
from flatkit.errors import UsageError  # noqa: E402
from flatkit.interop.hub import RepoRef, parse_repo_id  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

TINY = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 16), layers_per_block=1,
            norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"))
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _cache_repo(cache: Path, repo_id: str, src: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Lay ``src``'s files out in ``cache`` as huggingface_hub's cache holds repo ``repo_id`` at ``commit``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        dst = snap / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, dst.parent), dst)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for r in refs:
        (repo / "refs" / r).write_text(commit)
    return snap


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A cache holding a pipeline repo (unet/ + scheduler/ + model_index.json, main -> COMMIT_A, and an older
    commit B with other weights) and a bare UNet2DModel repo whose weights are a .bin beside a safetensors."""
    root = tmp_path_factory.mktemp("hub")
    cache = root / "cache"
    torch.manual_seed(0)
    pipe = root / "src_pipe"
    diffusers.UNet2DModel(**TINY).save_pretrained(pipe / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="linear").save_pretrained(pipe / "scheduler")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers",
                                           "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}))
    _cache_repo(cache, "tester/tiny-ddpm", pipe, COMMIT_A)
    torch.manual_seed(1)
    pipe_b = root / "src_pipe_b"
    shutil.copytree(pipe, pipe_b)
    diffusers.UNet2DModel(**TINY).save_pretrained(pipe_b / "unet")
    _cache_repo(cache, "tester/tiny-ddpm", pipe_b, COMMIT_B, refs=("v0",))
    (cache / "models--tester--tiny-ddpm" / "refs" / "main").write_text(COMMIT_A)  # main stays at A
    bare = root / "src_bare"
    torch.manual_seed(2)
    unet = diffusers.UNet2DModel(**TINY)
    unet.save_pretrained(bare)  # safetensors
    torch.save({k: torch.zeros_like(v) for k, v in unet.state_dict().items()}, bare / "diffusion_pytorch_model.bin")
    _cache_repo(cache, "tester/bare-unet", bare, COMMIT_A)
    return cache, pipe, bare


@pytest.fixture
def env(hub_cache, monkeypatch):
    cache, *_ = hub_cache
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a network call would fail loudly, not hang
    return hub_cache


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("spec,want", [
    ("google/ddpm-cifar10-32", RepoRef("google/ddpm-cifar10-32")),
    ("google/ddpm-cifar10-32@main", RepoRef("google/ddpm-cifar10-32", "main")),
    ("o/n@v1.0/unet", RepoRef("o/n", "v1.0", "unet")),
    ("o/n/unet", RepoRef("o/n", None, "unet")),
    ("hf://o/n", RepoRef("o/n")),
    ("runs/a/ckpt.pt", None), ("/abs/o/n", None), ("./o/n", None), ("~/o/n", None), ("plain", None),
    ("o/n.safetensors", None), ("builtin:shapes16", None),
])
def test_parse_repo_id(spec, want):
    assert parse_repo_id(spec) == want


def test_existing_local_path_wins(tmp_path, monkeypatch):
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse_repo_id("owner/name") is None and parse_repo_id("hf://owner/name") == RepoRef("owner/name")


def test_load_pipeline_repo_offline_records_repo_revision_hashes(env):
    cache, pipe, _ = env
    run = flatkit.load("tester/tiny-ddpm")
    ref = diffusers.UNet2DModel.from_pretrained(pipe / "unet").eval()
    assert _same_weights(run.model, ref)
    assert run.config.source == "diffusers" and run.config.diffusion.diffusion_steps == 100
    h = run.hub
    assert h["repo_id"] == "tester/tiny-ddpm" and h["revision"] == "main" and h["commit"] == COMMIT_A
    want = {rel: hashlib.sha256((pipe / rel).read_bytes()).hexdigest()
            for rel in ("unet/config.json", "scheduler/scheduler_config.json",
                        "unet/diffusion_pytorch_model.safetensors")}
    assert h["files"] == want
    assert run.sha256 == want["unet/diffusion_pytorch_model.safetensors"]
    # a revision (branch name or commit) and a subfolder
    b = flatkit.load("tester/tiny-ddpm@v0/unet")
    assert b.hub["commit"] == COMMIT_B and b.hub["subfolder"] == "unet" and not _same_weights(b.model, run.model)
    assert flatkit.load(f"hf://tester/tiny-ddpm@{COMMIT_B}").hub["commit"] == COMMIT_B


def test_bare_unet_repo_prefers_safetensors(env):
    _, _, bare = env
    run = flatkit.load("tester/bare-unet")
    assert _same_weights(run.model, diffusers.UNet2DModel.from_pretrained(bare).eval())  # not the zero .bin
    assert list(run.hub["files"]) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert any("DDPMScheduler defaults" in a for a in run.assumed)


def test_cli_info_and_hessian_meta(env, tmp_path):
    r = CliRunner().invoke(main, ["info", "tester/tiny-ddpm", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["hub"]["commit"] == COMMIT_A and d["path"] == "tester/tiny-ddpm"
    out = tmp_path / "h"
    r = CliRunner().invoke(main, ["hessian", "tester/tiny-ddpm", "--data", "builtin:shapes16?image_size=8&n=8",
                                  "--n-eval", "4", "--top-k", "1", "--max-iter", "3", "--no-progress",
                                  "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "hessian.json").read_text())["meta"]
    ck = meta["checkpoints"][0]
    assert ck["checkpoint"] == "tester/tiny-ddpm" and ck["hub"]["repo_id"] == "tester/tiny-ddpm"
    assert ck["hub"]["revision"] == "main" and ck["hub"]["commit"] == COMMIT_A and ck["label"] == "tiny-ddpm:raw"


@pytest.mark.parametrize("spec,needle", [
    ("nobody/absent-model", "models--nobody--absent-model"),
    ("tester/tiny-ddpm@nosuchbranch", "revision nosuchbranch"),
])
def test_absent_repo_is_one_line_exit_2(env, spec, needle):
    cache, *_ = env
    r = CliRunner().invoke(main, ["info", spec])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert needle in lines[0] and "--download" in lines[0] and str(cache) in lines[0], lines[0]


def test_bad_subfolder_and_api_error(env):
    with pytest.raises(UsageError, match="no subfolder 'vae'"):
        flatkit.load("tester/tiny-ddpm/vae")
    with pytest.raises(UsageError, match="--download"):
        flatkit.load("nobody/absent-model")


def test_without_huggingface_hub_a_missing_path_says_both(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(UsageError, match=r"^runs/nothere: no such file or directory \(read as a Hugging Face"):
        flatkit.load("runs/nothere")


def test_download_goes_to_huggingface_hub(env, monkeypatch):
    """--download hands the repo to snapshot_download with local_files_only=False (faked here: no network)."""
    import huggingface_hub

    cache, *_ = env
    calls = []

    def fake(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(cache / "models--tester--tiny-ddpm" / "snapshots" / COMMIT_A)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    run = flatkit.load("someone/else", download=True)
    assert run.hub["repo_id"] == "someone/else" and calls[0][0] == "someone/else"
    assert calls[0][1]["local_files_only"] is False and "*.safetensors" in calls[0][1]["allow_patterns"]
    calls.clear()
    r = CliRunner().invoke(main, ["info", "someone/else", "--download", "--json"])
    assert r.exit_code == 0, r.output
    assert calls and calls[0][1]["local_files_only"] is False
