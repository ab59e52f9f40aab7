"""The layering of the project, read from the source (ast): imdm_lab imports no other part of the project,
toy_tasks only imdm_lab, the scale library only imdm_lab (docs/architecture.md); scale/commands/ holds one
module per command of
the registry scale.cli.COMMANDS, each defining only add_arguments, run and private helpers; no command
module imports another; no library module (scale, imdm_lab) imports a command module or the registry;
no function below the command layer takes the parsed arguments (a parameter named `args` or annotated
as an argparse Namespace)."""
import ast
from pathlib import Path

import pytest

from scale.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
COMMAND_DIR = ROOT / "scale" / "commands"
COMMAND_FILES = sorted(p for p in COMMAND_DIR.glob("*.py") if p.name != "__init__.py")
# the registry and the entry point that calls it sit above the commands
ABOVE = {ROOT / "scale" / "cli.py", ROOT / "scale" / "__main__.py"}
LIBRARY_FILES = sorted(p for d in ("scale", "imdm_lab") for p in (ROOT / d).rglob("*.py")
                       if COMMAND_DIR not in p.parents and p not in ABOVE)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module an import statement of `path` names, at any depth (function-level imports too)."""
    name = module_name(path)
    return imported_by(path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0])


def imported_by(source: str, package: str) -> set[str]:
    """The modules the import statements of `source` (a module of `package`) name; `from a import b`
    names both a and a.b, since b may be a module; relative imports are resolved against `package`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_registry_lists_exactly_the_command_modules():
    assert sorted(module for module, _ in COMMANDS.values()) == sorted(module_name(p) for p in COMMAND_FILES)


@pytest.mark.parametrize("path", COMMAND_FILES, ids=lambda p: p.stem)
def test_a_command_module_holds_add_arguments_run_and_private_helpers(path):
    tree = ast.parse(path.read_text())
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert {"add_arguments", "run"} <= set(defined)
    assert [n for n in defined if n not in ("add_arguments", "run") and not n.startswith("_")] == []
    assert not any(isinstance(n, ast.ClassDef) for n in tree.body)


@pytest.mark.parametrize("path", COMMAND_FILES, ids=lambda p: p.stem)
def test_no_command_module_imports_another(path):
    assert [n for n in imported(path) if under(n, "scale.commands")] == []


def test_no_library_module_imports_the_command_layer():
    offenders = {module_name(p): sorted(n for n in imported(p) if under(n, "scale.commands") or under(n, "scale.cli"))
                 for p in LIBRARY_FILES}
    assert {m: names for m, names in offenders.items() if names} == {}


def _namespace_parameters(path: Path) -> list[str]:
    """`module:function(parameter)` for each named parameter called args or annotated with Namespace
    (*args / **kwargs pass-throughs are tuples and dicts, not parsed arguments)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs:
                annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                if arg.arg == "args" or "Namespace" in annotation:
                    found.append(f"{module_name(path)}:{getattr(node, 'name', 'lambda')}({arg.arg})")
    return found


def test_no_namespace_goes_below_the_command_layer():
    assert [f for p in LIBRARY_FILES for f in _namespace_parameters(p)] == []


def test_the_rule_reader_sees_what_it_should():
    """The readers above on known sources: absolute, relative and function-level imports, and the
    parsed arguments of a command's run."""
    source = ("import os\nfrom . import train\nfrom ..data import load_blocks\n"
              "def f():\n    from scale.cli import main\n")
    assert imported_by(source, "scale.commands") == {
        "os", "scale.commands", "scale.commands.train", "scale.data", "scale.data.load_blocks",
        "scale.cli", "scale.cli.main"}
    path = COMMAND_DIR / "pipeline.py"
    assert {"scale.cli", "scale.pipeline.plan"} <= imported(path)
    assert _namespace_parameters(path) == ["scale.commands.pipeline:run(args)"]


# part -> the project packages it may import besides itself (docs/architecture.md)
MAY_IMPORT = {"imdm_lab": set(), "toy_tasks": {"imdm_lab"}, "scale": {"imdm_lab"}}
PROJECT = ("imdm_lab", "toy_tasks", "scale", "notebooks", "benchmarks")


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_each_part_imports_only_the_parts_below_it(part):
    allowed = MAY_IMPORT[part] | {part}
    offenders = {module_name(p): sorted(n for n in imported(p) if n.split(".")[0] in PROJECT
                                        and n.split(".")[0] not in allowed)
                 for p in sorted((ROOT / part).rglob("*.py"))}
    assert {m: names for m, names in offenders.items() if names} == {}
