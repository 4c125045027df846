"""The house stays readable: no import cycle between modules (function-level imports included, TYPE_CHECKING
blocks excluded), no module over 400 lines, and every public name importable, typed and documented."""

import ast
import inspect
from pathlib import Path

import tinypretrain as tp

SRC = Path(tp.__file__).resolve().parent
PACKAGE = SRC.name


def _modules() -> dict[str, Path]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The modules of this package that one import statement loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = {f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target for alias in node.names}
    return found & modules.keys()


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, modules: dict[str, Path]) -> None:
        self.module, self.path, self.modules, self.targets = module, path, modules, set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.targets |= _imported(self.module, self.path, node, self.modules)

    visit_ImportFrom = visit_Import


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        visitor = _Imports(module, path, modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[module] = visitor.targets - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_checker_sees_function_level_imports_and_skips_type_checking_ones():
    modules = {f"{PACKAGE}.a": Path("a.py"), f"{PACKAGE}.b": Path("b.py"), f"{PACKAGE}.c": Path("c.py")}
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\ndef f():\n    from .b import g\n"
    visitor = _Imports(f"{PACKAGE}.a", Path("a.py"), modules)
    visitor.visit(ast.parse(source))
    assert visitor.targets == {f"{PACKAGE}.b"}


def test_no_import_cycle_between_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


# The subpackages in the order data flows; a module imports only from its own layer or those before it.
LAYERS = ("utils", "config", "data", "model", "train", "runs")


def _layer(module: str) -> int:
    parts = module.split(".")[1:]
    if not parts or parts[0] in ("cli", "__main__"):
        return len(LAYERS)  # the package's front doors sit on top
    return LAYERS.index(parts[0]) if parts[0] in LAYERS else 0  # version.py: bottom


def test_no_layer_imports_a_later_one():
    assert [p.name for p in sorted(SRC.iterdir()) if (p / "__init__.py").exists()] == sorted(LAYERS)
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets if _layer(t) > _layer(m)]
    assert not upward, upward


def test_subpackage_inits_only_say_what_they_own():
    for name in LAYERS:
        tree = ast.parse((SRC / name / "__init__.py").read_text(encoding="utf-8"))
        docstring = ast.get_docstring(tree)
        assert docstring and len(tree.body) == 1, f"{name}/__init__.py: a docstring and nothing else"
        assert len(docstring.splitlines()) == 2, f"{name}/__init__.py: say what it owns in two lines"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_400_lines():
    sizes = {str(path.relative_to(SRC)): len(path.read_text().splitlines()) for path in SRC.rglob("*.py")}
    assert max(sizes.values()) <= 400, {name: n for name, n in sizes.items() if n > 400}


def test_every_public_name_imports_and_says_what_it_is():
    for name in tp.__all__:
        obj = getattr(tp, name)
        assert inspect.getdoc(obj), f"tp.{name} has no docstring"
        if inspect.isfunction(obj):
            assert "return" in obj.__annotations__, f"tp.{name} has no return type"


def test_the_readme_code_map_names_every_subpackage_in_order():
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    code_map = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    named = [line.split("`")[1].rstrip("/") for line in code_map.splitlines() if line.startswith("- `")]
    assert named == [*LAYERS, "cli.py"]
