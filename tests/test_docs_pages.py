"""docs/api.md and docs/protocol.md run as written: every ```bash line (each a ``flatkit`` command, run in this
process) and every ```python block, in document order, as one session in a fresh folder. docs/README.md,
docs/methods.md and examples/README.md are checked for what they point to: links, headings, images, modules,
commands, example files."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from flatkit.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
COMMANDS = ("train", "info", "sample", "hessian", "sharpness", "perturb", "landscape", "prior", "exposure",
            "quantize", "fid", "track", "figures", "demo")


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of the fenced bash / python blocks that start a line."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.M | re.S)


def run_page(page: Path) -> list[str]:
    """Run every bash line (flatkit commands only) and python block of ``page`` in order; returns what ran."""
    namespace: dict = {"__name__": "__main__"}
    done = []
    for lang, body in blocks(page.read_text()):
        if lang == "python":
            exec(compile(body, str(page.name), "exec"), namespace)  # noqa: S102
            done.append("python block")
            continue
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            assert words[0] == "flatkit", f"{page.name}: unexpected command {line!r}"
            r = CliRunner().invoke(main, words[1:])
            assert r.exit_code == 0, f"{line}\n{r.output}"
            done.append(line)
    return done


def test_api_page_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = run_page(DOCS / "api.md")
    assert done[0].startswith("flatkit train ") and (tmp_path / "runs" / "quick" / "ckpt.pt").is_file()
    assert done.count("python block") >= 9
    for f in ("api/top_eigenvalues.json", "api/sample/samples.npz", "api/sam/ckpt.pt", "api/figures/figures.json",
              "api/report/report.html", "arms/raw/hessian.json"):
        assert (tmp_path / "runs" / f).is_file(), f


def test_api_page_names_every_top_level_name():
    import flatkit

    text = (DOCS / "api.md").read_text()
    for name in flatkit.__all__:
        if name != "__version__":
            assert f"`{name}" in text or f"{name}(" in text, name
    for name in ("flatkit.train.train", "TrainConfig", "write_report", "flatkit.demo.demo", "prior(", "exposure(",
                 "quantize(", "fid(", "sample("):
        assert name in text, name


def test_protocol_page_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = run_page(DOCS / "protocol.md")
    assert sum(d.startswith("flatkit ") for d in done) == 9 and done[-1] == "python block"
    assert (tmp_path / "runs" / "figures" / "tables.md").is_file()


def test_protocol_page_covers_what_the_paper_left_open():
    text = (DOCS / "protocol.md").read_text()
    for item in ("SAM radius", "SWA start and frequency", "iteration budget and batch", "DDPM or DDIM",
                 "FID reference set", "flatness-plot protocol", "exposure-gap definition", "quantizer"):
        assert item in text, item


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def check_links(page: Path) -> list[str]:
    """Every relative link of ``page`` points to an existing file (and heading, for #anchors)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        f = (page.parent / path).resolve() if path else page
        assert f.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            heads = [slug(h) for h in re.findall(r"^#+ (.*)$", f.read_text(), flags=re.M)]
            assert anchor in heads, f"{page.name}: {target}: no heading #{anchor} in {f.name}"
    return targets


def test_docs_index_links_every_page_and_command():
    index = DOCS / "README.md"
    targets = check_links(index)
    pages = {t.partition("#")[0] for t in targets}
    for p in DOCS.glob("*.md"):
        if p.name != "README.md":
            assert p.name in pages, f"docs/README.md does not link {p.name}"
    text = index.read_text()
    for c in COMMANDS:
        assert f"| `flatkit {c}` |" in text, c


def test_methods_page_modules_exist():
    text = (DOCS / "methods.md").read_text()
    modules = set(re.findall(r"`(flatkit/[\w/]+(?:\.py)?)`", text))
    assert len(modules) >= 15
    for m in modules:
        assert (REPO / m).exists(), m
    for topic in ("Ho et al. 2020", "Nichol & Dhariwal 2021", "Foret et al. 2021", "Kwon et al. 2021",
                  "Izmailov et al. 2018", "Ning et al. 2023", "Hutch++", "Ubaru", "Li et al. 2018", "Keskar",
                  "Andriushchenko", "Heusel et al. 2017", "sliced Wasserstein"):
        assert topic in " ".join(text.split()), topic


def test_examples_readme_lists_every_example():
    page = REPO / "examples" / "README.md"
    check_links(page)
    text = page.read_text()
    for f in (REPO / "examples").iterdir():
        if f.suffix in (".py", ".sh"):
            assert f"]({f.name})" in text, f.name


@pytest.mark.parametrize("page", ["api.md", "methods.md", "protocol.md", "README.md"])
def test_new_pages_links_resolve(page):
    check_links(DOCS / page)


def parse_command(words: list[str]) -> None:
    """Parse a ``flatkit`` command line with click, as running it would, without running it: the subcommand
    exists, every option exists and every value has the option's type and range."""
    assert words[0] == "flatkit", words
    cmd = main.get_command(None, words[1])
    assert cmd is not None, words
    cmd.make_context(words[1], list(words[2:]))


@pytest.mark.parametrize(("page", "section"), [("curvature.md", "Figures"),
                                               ("robustness.md", "`flatkit sample CKPT`")])
def test_figure_commands_parse(page, section):
    """The commands that made the figures added to these sections (too slow to rerun in the suite: minutes)."""
    text = (DOCS / page).read_text()
    start = text.index(f"## {section}\n")
    body = text[start:text.find("\n## ", start + 4)]
    lines = [ln for lang, b in blocks(body) if lang == "bash" for ln in b.splitlines() if ln.strip()]
    assert lines
    for line in lines:
        parse_command(shlex.split(line))
    for img in re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", body):
        assert (DOCS / img).is_file(), img
