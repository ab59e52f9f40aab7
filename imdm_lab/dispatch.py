"""The dispatcher every command line shares: `python -m scale COMMAND ...` (scale.cli) and
`python -m toy_tasks COMMAND ...` (toy_tasks.cli).

A registry maps each command name to (module, one-line help). The module holds `add_arguments(parser)`
and `run(args) -> int | None`, and may hold `check(args)`: the cheap checks of the arguments (values,
their costs, the output paths), no work and nothing written, which `run` makes first. It is imported
only when its command runs. The parsed arguments carry `run_command(argv) -> exit status`, this entry
point with the same registry, and `check_command(argv)`, which parses argv with its command's parser
and makes its checks (a ValueError naming what is wrong), for a command that runs other commands in its
own process (the scale pipeline) without importing the registry above it.

Bad input ends the program with exit status 2 and one line on stderr: a ValueError of a command (the
library's "NAME: expected ..., got ..."), a usage error of its parser, or an unknown command. So does a
write that the file system refuses (WRITE_ERRORS: full, read-only, over quota, not permitted): the line
names the path and the error, then the notes the code on the way added to the error (what survives of
the work, e.g. a training run's last complete checkpoint), instead of a traceback.
"""
from __future__ import annotations

import argparse
import errno
import functools
import importlib
import os
import sys
from collections.abc import Mapping, Sequence

Registry = Mapping[str, tuple[str, str]]  # command -> (module, one-line help)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ValueErrors: one line on stderr and exit 2, like any bad input."""

    def error(self, message):
        raise ValueError(f"{self.prog}: error: {message}")


def usage(prog: str, description: str, commands: Registry) -> str:
    """The help of the command line: its description and every command with its help line."""
    width = max(map(len, commands))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in commands.items()]
    return f"usage: {prog} COMMAND [options]\n\n{description}\n\ncommands:\n" + "\n".join(lines)


def one_line(err: Exception) -> str:
    """An error's message on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(str(err).split()) or type(err).__name__


# errno of a write the file system refuses (full, over quota, read-only, file too large, not permitted):
# the user's to fix (free space, another folder), not a bug
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM)


def refusal(err: OSError) -> str:
    """The one line of a refused write: the path, the error, and the notes added on the way up."""
    path = err.filename if err.filename is not None else "(a file)"
    notes = "; ".join(getattr(err, "__notes__", ()))
    return one_line(f"{path}: {err.strerror or os.strerror(err.errno)}" + (f"; {notes}" if notes else ""))


def parse(prog: str, description: str, commands: Registry, argv: Sequence[str]):
    """(module, parsed arguments) of the command argv[0] with the options argv[1:], nothing run; bad input
    is a ValueError."""
    if not argv:
        raise ValueError(f"{prog}: error: the following arguments are required: command")
    name, rest = argv[0], list(argv[1:])
    if name not in commands:
        raise ValueError(f"{prog}: error: argument command: invalid choice: {name!r} "
                         f"(choose from {', '.join(map(repr, commands))})")
    module_name, help_ = commands[name]
    module = importlib.import_module(module_name)
    parser = Parser(prog=f"{prog} {name}", description=help_)
    module.add_arguments(parser)
    parser.set_defaults(run_command=functools.partial(main, prog, description, commands),
                        check_command=functools.partial(check, prog, description, commands))
    return module, parser.parse_args(rest)


def check(prog: str, description: str, commands: Registry, argv: Sequence[str]) -> None:
    """Parse argv (a command and its options) and make the command's cheap checks (its `check(args)`,
    when it has one) without running it: a ValueError names what is wrong."""
    module, args = parse(prog, description, commands, argv)
    if hasattr(module, "check"):
        module.check(args)


def main(prog: str, description: str, commands: Registry, argv: Sequence[str] | None = None) -> int:
    """Run the command argv[0] of `commands` with the options argv[1:]; its exit status (2: bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage(prog, description, commands))
        return 0
    try:
        module, args = parse(prog, description, commands, argv)
        return int(module.run(args) or 0)
    except ValueError as err:
        print(one_line(err), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader of stdout left (`| head`): nothing more can be shown, and the interpreter's last flush
        # of stdout must not fail with a second error (the recipe of the Python docs, signal module)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        print(f"{prog} {argv[0]}: {refusal(err)}", file=sys.stderr)
        return 2
