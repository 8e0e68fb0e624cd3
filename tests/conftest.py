from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ADM_FIXTURES = SHARED / "fixtures" / "adm"


#: the slowest test files, slowest first (seconds of one file under ``make test``, ``--durations``): they start
#: first, the many quick files fill in behind them, and the two workers finish together (``make test`` passes
#: ``--no-loadscope-reorder``, else xdist would start the files with the most tests first and leave these to
#: the end, one worker running them alone)
SLOW_FIRST = (
    "tests/test_demo.py",  # ~265 s
    "tests/test_paper_examples.py",  # ~220 s
    "tests/distributed/test_torchrun.py",  # ~150 s
    "tests/test_examples.py",  # ~95 s
    "tests/test_docs_pages.py",  # ~70 s
    "tests/report/test_figures.py",  # ~60 s: builds the report tests' result folders (test_report.py, later,
    # reads them; tests/report/conftest.py shares them between the workers)
    "tests/test_precision.py",  # ~35 s
    "tests/test_gpu_suite_smoke.py",  # ~35 s
)


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {f: i for i, f in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest in order


@pytest.fixture
def adm_fixtures() -> Path:
    if not (ADM_FIXTURES / "adm_small_a.pt").is_file():
        pytest.skip("../shared/fixtures/adm is not present")
    return ADM_FIXTURES


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The tests use small tensors: intra-op threads only spin-wait (10x slower on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_checkpoint(
    path: str | Path,
    preset: str | None = "tiny",
    *,
    seed: int = 0,
    noise: float = 0.02,
    noise_seed: int | None = None,
    model: object = None,
    diffusion: object = None,
    data: str = "builtin:shapes16",
    others: dict[str, object] | None = None,
    step: int = 0,
    ema_rates: list[float] | None = None,
    train: dict | None = None,
) -> Path:
    """Write a small untrained checkpoint in the trainer's format and return its path.

    ``preset`` names the model and diffusion configs; ``model`` / ``diffusion`` replace them (a config) or change
    fields of the preset's (a dict). The raw weights are ``build_model(seed=seed)``'s, every floating tensor moved
    off its init by ``noise * N(0, 1)`` (ADM zero-initialises its output layers, so an unmoved model's loss does not
    depend on most weights) drawn from a generator seeded ``noise_seed`` (default ``seed``). ``others`` adds weight
    sets by name: a float ``s`` is raw + ``s * N(0, 1)`` drawn on from the same generator (0: raw's own tensors),
    a callable maps the raw state dict to that set.
    """
    from flatkit.checkpoint import make_checkpoint, save_checkpoint
    from flatkit.config import RunConfig
    from flatkit.models.presets import build_model, get_preset

    cfg_m, cfg_d = get_preset(preset) if preset is not None else (None, None)
    cfg_m = dataclasses.replace(cfg_m, **model) if isinstance(model, dict) else model or cfg_m
    cfg_d = dataclasses.replace(cfg_d, **diffusion) if isinstance(diffusion, dict) else diffusion or cfg_d
    g = torch.Generator().manual_seed(seed if noise_seed is None else noise_seed)

    def moved(sd: dict, scale: float) -> dict:
        if not scale:
            return sd
        return {k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                for k, v in sd.items()}

    raw = moved(build_model(cfg_m, seed=seed).state_dict(), noise)
    weights = {"raw": raw}
    for name, how in (others or {}).items():
        weights[name] = how(raw) if callable(how) else moved(raw, how)
    path = Path(path)
    ck = make_checkpoint(RunConfig(model=cfg_m, diffusion=cfg_d, data=data), weights, step=step,
                         ema_rates=ema_rates, train=train)
    save_checkpoint(ck, path)
    return path


@pytest.fixture(scope="session")
def make_ckpt():
    """``make_ckpt(path, preset="tiny", **options) -> path``: :func:`write_checkpoint` (any scope may use it)."""
    return write_checkpoint


@pytest.fixture(scope="session")
def shared_ckpt(tmp_path_factory):
    """``shared_ckpt(preset="tiny", **options) -> path``: :func:`write_checkpoint`'s checkpoint for these options,
    written once per session in a folder of its own. Shared by every test that asks for it: read it, never write
    next to it."""
    cache: dict[str, Path] = {}

    def get(preset: str | None = "tiny", **options) -> Path:
        key = repr((preset, sorted(options.items())))
        if key not in cache:
            name = f"{preset or 'model'}{options.get('seed', 0)}"
            cache[key] = write_checkpoint(tmp_path_factory.mktemp("ckpt") / f"{name}.pt", preset, **options)
        return cache[key]

    return get
