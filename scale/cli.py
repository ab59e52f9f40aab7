"""`python -m scale COMMAND ...`: a registry of subcommands, each a module of scale.commands with
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their command runs.

A ValueError raised by a command (bad input: a missing data path, an unknown config key, a checkpoint
of another size, a corrupted file) becomes its one-line message on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("scale.commands.train", "pre-train an MDLM / IMDM DiT (single process or under torchrun)"),
    "import-mdlm": ("scale.commands.import_mdlm",
                    "convert official MDLM weights (HF folder / id or .ckpt) to a checkpoint"),
    "sample": ("scale.commands.sample", "decode samples of a checkpoint at several step counts"),
    "distill": ("scale.commands.distill",
                "few-step distillation: sdtt, imdm-sdtt, redi, imdm-redi, imdm-eps-coupling"),
    "coupling": ("scale.commands.coupling",
                 "teacher completions of masked training blocks, the (IM-)ReDi coupling"),
    "evaluate": ("scale.commands.evaluate",
                 "gen PPL, entropy, NFE, time, MAUVE and ELBO perplexity per checkpoint x steps"),
    "train-judge": ("scale.commands.train_judge",
                    "train a small GPT-2 judge on held-out text (for machines without gpt2-large)"),
    "train-tokenizer": ("scale.commands.train_tokenizer",
                        "train a small byte-level BPE vocabulary on a corpus split (cached)"),
    "train-ngram-judge": ("scale.commands.train_ngram_judge",
                          "count a Kneser-Ney n-gram judge on held-out text"),
    "report": ("scale.commands.report",
               "bootstrap intervals, real-text references and the PPL-entropy frontier of an evaluation"),
    "pipeline": ("scale.commands.pipeline",
                 "MDLM -> IM-SDTT -> coupling -> IM-ReDi -> evaluate, stage by stage"),
    "push": ("scale.commands.push",
             "upload a checkpoint to the Hugging Face Hub (config.json, safetensors, model card)"),
    "plot": ("scale.commands.plot",
             "plot a run's metrics.jsonl: training loss, validation ELBO, gen PPL / entropy"),
}


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ValueErrors: one line on stderr and exit 2, like any bad input."""

    def error(self, message):
        raise ValueError(f"{self.prog}: error: {message}")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: python -m scale COMMAND [options]\n\ncommands:\n" + "\n".join(lines)


def parse(argv: list[str]):
    """(the command's module, its parsed arguments) of `python -m scale COMMAND ...`, nothing run; a usage
    error is a ValueError. The docs' commands are checked through this (tests/test_doc_commands.py)."""
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise ValueError(f"command: expected one of {sorted(COMMANDS)}, got {name!r}")
    module = importlib.import_module(COMMANDS[name][0])
    parser = Parser(prog=f"python -m scale {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    return module, parser.parse_args(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    try:
        module, args = parse(argv)
        return int(module.run(args) or 0)
    except ValueError as err:
        print(str(err).splitlines()[0] if str(err) else type(err).__name__, file=sys.stderr)
        return 2
