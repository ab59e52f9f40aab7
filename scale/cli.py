"""`python -m scale COMMAND ...`: the registry of subcommands, each a module of scale.commands with
`add_arguments(parser)` and `run(args) -> int`, run by imdm_lab.dispatch (modules are imported only when
their command runs).

A ValueError raised by a command (bad input: a missing data path, an unknown config key, a checkpoint
of another size, a corrupted file) becomes its one-line message on stderr and exit status 2.
"""
from __future__ import annotations

from imdm_lab import dispatch

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("scale.commands.train", "pre-train an MDLM / IMDM DiT (single process or under torchrun)"),
    "import-mdlm": ("scale.commands.import_mdlm",
                    "convert official MDLM weights (HF folder / id or .ckpt) to a checkpoint"),
    "sample": ("scale.commands.sample", "decode samples of a checkpoint at several step counts"),
    "distill": ("scale.commands.distill",
                "few-step distillation of a checkpoint by a method of scale.training.distill.METHODS"),
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
    "memorisation": ("scale.commands.memorisation",
                     "longest training-text run of each stored sample, distance to a coupling's completions"),
    "report": ("scale.commands.report",
               "bootstrap intervals, real-text references and the PPL-entropy frontier of an evaluation"),
    "pipeline": ("scale.commands.pipeline",
                 "MDLM -> IM-SDTT -> coupling -> IM-ReDi -> evaluate, stage by stage"),
    "push": ("scale.commands.push",
             "upload a checkpoint to the Hugging Face Hub (config.json, safetensors, model card)"),
    "plot": ("scale.commands.plot",
             "plot a run's metrics.jsonl: training loss, validation ELBO, gen PPL / entropy"),
}


DESCRIPTION = "Masked diffusion language models at scale: training, distillation, couplings, evaluation."


def parse(argv: list[str]):
    """(the command's module, its parsed arguments) of `python -m scale COMMAND ...`, nothing run; a usage
    error is a ValueError. The docs' commands are checked through this (tests/test_doc_commands.py)."""
    return dispatch.parse("python -m scale", DESCRIPTION, COMMANDS, argv)


def main(argv: list[str] | None = None) -> int:
    return dispatch.main("python -m scale", DESCRIPTION, COMMANDS, argv)
