"""The command layer of `python -m toy_tasks`: one module per command of the registry toy_tasks.cli.COMMANDS,
each holding only `add_arguments(parser)`, `run(args)` and private helpers.

A command turns its parsed arguments into plain values and calls library modules of `toy_tasks` (and
`imdm_lab`) with them; no argparse Namespace goes below this layer. Import rule (tests/test_layers.py):
no command module imports another one, and no library module imports a command module or toy_tasks.cli.
"""
