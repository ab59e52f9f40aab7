"""The commands of the README and of docs/*.md, as written in their code blocks: each is parsed by the real
parsers (torchrun's own for a torchrun line: it reads the whole command line, which is where `--n`
fails), the cheap CPU ones are run, `pipeline --dry-run` is run and what it prints must be on the same
page, and docs/reproduce-paper.md's compute estimate must print its own table.

Lines with `[` or `|` are synopses (optional parts, alternatives), not commands, and are skipped.
"""
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:srun\s+)?(?:python -m (?:scale|toy_tasks)\b|torchrun\b|hf download\b)")
# what the SLURM example's variables stand for when its torchrun line is parsed
SLURM = {"SLURM_NNODES": "4", "SLURM_JOB_ID": "1234", "head": "node001"}


def _blocks(text: str) -> list[str]:
    """Fenced code blocks other than Python, and 4-space indented command lines."""
    fenced = [b for info, b in re.findall(r"```([a-z]*)\n(.*?)```", text, flags=re.S) if info != "python"]
    return fenced + re.findall(r"^    (python -m .*)$", text, flags=re.M)


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in _blocks(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if COMMAND.match(line) and "[" not in line and "|" not in line:
                    found.append((page.name, line))
    return found


COMMANDS = _commands()


def _argv(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    words = [re.sub(r"\$(\w+)", lambda m: SLURM.get(m.group(1), m.group(0)), w) for w in words]
    return words[1:] if words[0] == "srun" else words


def _parse(argv: list[str]):
    """Parse one command line with the parsers that would read it; returns (program, parsed arguments)."""
    if argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                launched = get_args_parser().parse_args(argv[1:])
        except SystemExit:
            raise AssertionError(f"torchrun refuses it: {err.getvalue().strip().splitlines()[-1]}") from None
        assert launched.module and launched.training_script == "scale", "expected torchrun ... -m scale ..."
        return _parse(["python", "-m", "scale", *launched.training_script_args])
    if argv[:3] == ["python", "-m", "scale"]:
        from scale.cli import parse
        return "scale", parse(argv[3:])[1]
    if argv[:3] == ["python", "-m", "toy_tasks"]:
        from toy_tasks.cli import parse
        return "toy_tasks", parse(argv[3:])[1]
    if argv[:2] == ["hf", "download"]:
        return "hf", None
    raise AssertionError(f"no parser for {argv[:3]}")


def test_the_docs_have_commands():
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "reproduce-paper.md", "scale-distill.md", "toy-demo.md"} <= pages
    assert any("coupling" in line and "torchrun" in line for _, line in COMMANDS)


@pytest.mark.parametrize("page, line", COMMANDS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(COMMANDS)])
def test_command_parses(page, line):
    _parse(_argv(line))


def test_torchrun_refuses_the_short_n_of_coupling():
    """What the check above catches: `--n` after `-m scale coupling` is taken by torchrun's parser."""
    with pytest.raises(AssertionError, match="ambiguous option: --n"):
        _parse(_argv("torchrun --nproc_per_node 8 -m scale coupling --teacher t --n 100000 --out c"))


DRY_RUNS = [(page, line) for page, line in COMMANDS if " pipeline " in line and "--dry-run" in line]


@pytest.mark.parametrize("page, line", DRY_RUNS)
def test_pipeline_dry_run_prints_the_commands_of_its_page(page, line, capsys):
    from scale.cli import main
    assert main(_argv(line)[3:]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) >= 4
    # the stage commands are on the page itself or on the page of the paper's chain
    text = (ROOT / ("README.md" if page == "README.md" else f"docs/{page}")).read_text()
    text += (ROOT / "docs" / "reproduce-paper.md").read_text()
    missing = [p for p in printed if p not in text]
    assert not missing, f"{page} (and docs/reproduce-paper.md) lack the stage commands {missing}"


def _redirected(argv: list[str], tmp_path: Path) -> list[str]:
    """The same command writing into tmp_path: every --out / --json / --plot value moved there."""
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        if word in ("--out", "--json", "--plot"):
            out[i + 1] = str(tmp_path / Path(out[i + 1]).name)
    return out


CHEAP = [(page, line) for page, line in COMMANDS
         if re.match(r"python -m toy_tasks (bound|success-curve|sample)\b", line)
         or line.startswith("python -m scale report --replot")]


@pytest.mark.parametrize("page, line", CHEAP, ids=[f"{p}:{i}" for i, (p, _) in enumerate(CHEAP)])
def test_cheap_cpu_command_runs(page, line, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = _redirected(_argv(line), tmp_path)
    if argv[2] == "scale":
        from scale.cli import main
    else:
        from toy_tasks.cli import main
    assert main(argv[3:]) == 0


def test_the_figures_command_redraws_every_committed_toy_figure(tmp_path, capsys):
    from toy_tasks.cli import main
    from toy_tasks.redraw import FIGURES
    assert main(["figures", "--results", str(ROOT / "docs" / "results"), "--out", str(tmp_path)]) == 0
    assert "skipped" not in capsys.readouterr().out
    for name in FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (ROOT / "docs" / "figures" / name).is_file()


def test_hf_download_takes_local_dir():
    hf = Path(sys.executable).parent / "hf"
    if not hf.is_file():
        pytest.skip("the hf client of huggingface_hub is not installed next to this Python")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "--local-dir" in out.stdout


def test_the_compute_estimate_prints_its_table(capsys):
    text = (ROOT / "docs" / "reproduce-paper.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(block, "reproduce-paper.md", "exec"), {"__name__": "doc"})
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 9 and all(row in text for row in rows)


@pytest.mark.slow
def test_the_readme_cpu_scale_commands_run_as_written(tmp_path, monkeypatch, token_cache, capsys):
    """README's CPU block: train, sample and plot run as written (in a scratch folder); its pipeline line
    is the run of tests/test_scale_distill.py (`pipeline --preset tiny-cpu`), here only parsed above."""
    from scale.cli import main
    readme = [line for page, line in COMMANDS if page == "README.md" and line.startswith("python -m scale ")]
    block = [line for line in readme if "runs/tiny" in line]
    assert [_argv(line)[3] for line in block] == ["train", "sample", "plot"]
    monkeypatch.chdir(tmp_path)
    for line in block:
        assert main(_argv(line)[3:]) == 0, line
    assert (tmp_path / "runs" / "tiny" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
