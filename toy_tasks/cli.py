"""Command line of the toy tasks:  python -m toy_tasks <command> [options]

    python -m toy_tasks bound --task align --V 16 --L 4 --steps 1,2,4 [--schedule linear] [--json]
    python -m toy_tasks bound --probs joint.npy --steps 1,2,4 --json
    python -m toy_tasks success-curve --V 50000 --L 10 --steps 1,2,4,8,16 [--json]

A command is one line of the registry COMMANDS: name -> (module of toy_tasks.commands, one-line help); the
module's add_arguments(parser) and run(args) are run by imdm_lab.dispatch, and run prints its result on
stdout. A ValueError or a usage error ends the program with exit code 2 and one line on stderr.
"""
from __future__ import annotations

from imdm_lab import dispatch

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bound": ("toy_tasks.commands.bound",
              "Entropy, TC, KL(p || p_k) of the k-step exact MDM and the stepwise bound, in nats."),
    "success-curve": ("toy_tasks.commands.success_curve",
                      "P(all tokens equal) of the k-step exact MDM on `align`, in closed form (no enumeration)."),
    "sample": ("toy_tasks.commands.sample",
               "Sample sequences with the real ancestral sampler and an oracle denoiser; write them as .npy."),
    "experiment": ("toy_tasks.commands.experiment",
                   "Train the toy methods, measure their sample laws against p, print the table (JSON / PNG on "
                   "request)."),
    "figures": ("toy_tasks.commands.figures",
                "Redraw the committed toy figures from the committed results, training nothing."),
}
DESCRIPTION = "Exact theory and experiments on toy tasks."


def parse(argv: list[str]):
    """(the command's module, its parsed arguments) of `python -m toy_tasks COMMAND ...`, nothing run; a
    usage error is a ValueError."""
    return dispatch.parse("python -m toy_tasks", DESCRIPTION, COMMANDS, argv)


def main(argv: list[str] | None = None) -> int:
    return dispatch.main("python -m toy_tasks", DESCRIPTION, COMMANDS, argv)
