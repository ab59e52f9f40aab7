"""The layering of the project, read from the source (ast): imdm_lab imports no other part of the project,
toy_tasks only imdm_lab, the scale library only imdm_lab (docs/architecture.md). scale/commands/ and
toy_tasks/commands/ hold one module per command of their registry (scale.cli.COMMANDS,
toy_tasks.cli.COMMANDS), each defining only add_arguments, run, optionally check, and private helpers; no
command module imports another; no library module imports a command module or a registry; no function below
the command layer takes the parsed arguments (a parameter named `args` or annotated as an argparse Namespace).

The modules of the project import each other without a cycle (function-level imports and the registries'
imports by name included), no function imports a project module (the imports are at the top, where they
are seen), and the rooms of scale are in order: a module imports only modules of its own room or of
rooms below it."""
import ast
from pathlib import Path

import pytest

import scale.cli
import toy_tasks.cli

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("imdm_lab", "toy_tasks", "scale", "notebooks", "benchmarks")
PACKAGES = ("imdm_lab", "toy_tasks", "scale")
# part -> its registry module; the registry and the entry point that calls it sit above the commands
REGISTRIES = {"scale": scale.cli, "toy_tasks": toy_tasks.cli}
COMMAND_FILES = {part: sorted(p for p in (ROOT / part / "commands").glob("*.py") if p.name != "__init__.py")
                 for part in REGISTRIES}
ABOVE = {ROOT / part / name for part in REGISTRIES for name in ("cli.py", "__main__.py")}
LIBRARY_FILES = sorted(p for d in PACKAGES for p in (ROOT / d).rglob("*.py")
                       if not any(ROOT / part / "commands" in p.parents for part in REGISTRIES) and p not in ABOVE)
ALL_COMMAND_FILES = [p for files in COMMAND_FILES.values() for p in files]


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


def function_level_imports(source: str) -> list[tuple[str, int]]:
    """(module, line) of each import statement inside a function of `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    found += [(alias.name, sub.lineno) for alias in sub.names]
                elif isinstance(sub, ast.ImportFrom) and not sub.level:
                    found.append((sub.module or "", sub.lineno))
    return found


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _part(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


# ---- the command layers ----------------------------------------------------------------------------
@pytest.mark.parametrize("part", sorted(REGISTRIES))
def test_the_registry_lists_exactly_the_command_modules(part):
    listed = sorted(module for module, _ in REGISTRIES[part].COMMANDS.values())
    assert listed == sorted(module_name(p) for p in COMMAND_FILES[part])


@pytest.mark.parametrize("path", ALL_COMMAND_FILES, ids=lambda p: f"{_part(p)}.{p.stem}")
def test_a_command_module_holds_add_arguments_run_and_private_helpers(path):
    """add_arguments and run, optionally check (the cheap checks, imdm_lab.dispatch), and private helpers."""
    tree = ast.parse(path.read_text())
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert {"add_arguments", "run"} <= set(defined)
    assert [n for n in defined if n not in ("add_arguments", "check", "run") and not n.startswith("_")] == []
    assert not any(isinstance(n, ast.ClassDef) for n in tree.body)


@pytest.mark.parametrize("path", ALL_COMMAND_FILES, ids=lambda p: f"{_part(p)}.{p.stem}")
def test_no_command_module_imports_another_or_a_registry(path):
    part = _part(path)
    assert [n for n in imported(path) if under(n, f"{part}.commands") or under(n, f"{part}.cli")] == []


def test_no_library_module_imports_the_command_layer():
    layers = [f"{part}.{layer}" for part in REGISTRIES for layer in ("commands", "cli")]
    offenders = {module_name(p): sorted(n for n in imported(p) if any(under(n, layer) for layer in layers))
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
              "def f():\n    from scale.cli import main\n    import json\n")
    assert imported_by(source, "scale.commands") == {
        "os", "scale.commands", "scale.commands.train", "scale.data", "scale.data.load_blocks",
        "scale.cli", "scale.cli.main", "json"}
    assert function_level_imports(source) == [("scale.cli", 5), ("json", 6)]
    path = ROOT / "scale" / "commands" / "pipeline.py"
    assert {"scale.pipeline", "scale.pipeline.plan"} <= imported(path)
    assert _namespace_parameters(path) == ["scale.commands.pipeline:run(args)"]


# ---- parts -----------------------------------------------------------------------------------------
# part -> the project packages it may import besides itself (docs/architecture.md)
MAY_IMPORT = {"imdm_lab": set(), "toy_tasks": {"imdm_lab"}, "scale": {"imdm_lab"}}


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_each_part_imports_only_the_parts_below_it(part):
    allowed = MAY_IMPORT[part] | {part}
    offenders = {module_name(p): sorted(n for n in imported(p) if n.split(".")[0] in PROJECT
                                        and n.split(".")[0] not in allowed)
                 for p in sorted((ROOT / part).rglob("*.py"))}
    assert {m: names for m, names in offenders.items() if names} == {}


# ---- the import graph ------------------------------------------------------------------------------
MODULES = {module_name(p): p for d in PACKAGES for p in (ROOT / d).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports: each name an import statement gives, resolved to the
    module it is (`from a import b`: a.b when that is a module, else a), and the modules a registry names
    (the dispatcher imports them on its behalf)."""
    graph = {}
    for name, path in MODULES.items():
        targets = {n if n in MODULES else n.rpartition(".")[0] for n in imported(path)}
        graph[name] = {t for t in targets if t in MODULES and t != name}
    for registry in REGISTRIES.values():
        graph[registry.__name__] |= {module for module, _ in registry.COMMANDS.values()}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle [a, b, ..., a] of the directed graph, None when it has none (depth-first search)."""
    state, stack = {}, []  # state: 1 on the current path, 2 finished

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"judge": {"ngram"}, "ngram": {"metrics"}, "metrics": {"judge"}}) == [
        "judge", "ngram", "metrics", "judge"]


def test_the_project_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    assert "scale.commands.pipeline" in graph["scale.cli"]  # by the registry's name
    assert {"scale.evaluation.metrics", "scale.evaluation.ngram_judge"} <= graph["scale.evaluation.judge"]


def test_no_function_imports_a_project_module():
    """Project imports are at the top of a module, where the graph above and a reader see them; only
    heavy third-party libraries (transformers, matplotlib, mauve, ...) are imported where they are used."""
    found = [f"{module_name(p)}:{line} {name}" for p in MODULES.values()
             for name, line in function_level_imports(p.read_text()) if name.split(".")[0] in PROJECT]
    assert found == []


# ---- the rooms of scale ----------------------------------------------------------------------------
# lowest first (docs/architecture.md); a module of a room imports only its own room and the rooms below
ROOMS = ("data", "model", "checkpoints", "evaluation", "training", "pipeline", "commands", "cli")
ROOM_OF = {"scale.pipeline": "pipeline", "scale.presets": "pipeline", "scale.cli": "cli", "scale.__main__": "cli"}


def room(module: str) -> str | None:
    """The room of a module of scale: scale.<room>.*, or the one ROOM_OF names; None for the package."""
    if module in ROOM_OF:
        return ROOM_OF[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_of_scale_has_a_room():
    assert [m for m in MODULES if under(m, "scale") and m != "scale" and room(m) not in ROOMS] == []


def test_the_rooms_of_scale_import_only_their_own_room_and_those_below():
    order = {name: i for i, name in enumerate(ROOMS)}
    graph = import_graph()
    upward = sorted(f"{m} ({room(m)}) -> {t} ({room(t)})" for m in graph if under(m, "scale") and room(m)
                    for t in graph[m] if under(t, "scale") and room(t) and order[room(t)] > order[room(m)])
    assert upward == []
