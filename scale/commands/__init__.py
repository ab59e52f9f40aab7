"""The command layer of `python -m scale`: one module per command of the registry scale.cli.COMMANDS,
each holding only `add_arguments(parser)` and `run(args) -> int`.

A command turns its parsed arguments into plain values and calls library modules of `scale` (and
`imdm_lab`) with them; no argparse Namespace goes below this layer. Import rule (tests/test_layers.py):
no command module imports another one, and no library module imports a command module or scale.cli.
A command that runs other commands (the pipeline) goes through the registry's entry point that the
dispatcher hands it, `args.run_command` (imdm_lab.dispatch).
"""
