"""The rooms of the package stay as they are: an import that crosses a wall fails here.

Walks every module under src/persea and bench/ with `ast` (nothing is imported) and checks:
the toy world is a leaf that no product package names; only `persea.cli` imports
`persea.cli`; `persea.accounts` knows nothing of HTTP (`persea.serve`); the database layer
does not read the project file; the distiller reads the harvest through the cache format
(`persea.cache`), never the harvest itself, and the cache imports neither stage; benchmarks
import nothing from tests/; the top-level packages import each other without a cycle; and no
persea module is imported inside a function (that hides the graph) unless importing it loads
a heavy library such as torch or transformers (in the CLI, such an import says so on its
line: `# heavy: torch`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PRODUCT = ("models", "cache", "harvest", "distill", "evaluate", "accounts", "serve", "db")


def _module_name(path: Path) -> str:
    if path.is_relative_to(SRC):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
    else:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import statement in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, in_function))
                # `from persea.x import y` may name the submodule persea.x.y
                found.extend((f"{child.module}.{a.name}", child.lineno, in_function)
                             for a in child.names)
            visit(child, local)

    visit(tree, False)
    return found


FILES = sorted([*SRC.joinpath("persea").rglob("*.py"), *ROOT.joinpath("bench").glob("*.py")])
MODULES = {_module_name(p) for p in FILES}
IMPORTS = {_module_name(p): [(m, line, local) for m, line, local in _imports(p)
                             if not m.startswith("persea") or m in MODULES]
           for p in FILES}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges(source_filter, target_filter) -> list[str]:
    return [f"{src} -> {dst} (line {line})"
            for src, imports in IMPORTS.items() if source_filter(src)
            for dst, line, _ in imports if target_filter(dst)]


def test_the_walk_sees_the_package():
    assert "persea.cli" in MODULES and "persea.accounts.service" in MODULES
    assert len(FILES) > 80


def test_no_product_package_imports_the_toy_world():
    assert _edges(lambda m: any(_under(m, f"persea.{p}") for p in PRODUCT),
                  lambda m: _under(m, "persea.toyworld")) == []


def test_only_the_cli_imports_the_cli():
    assert _edges(lambda m: not _under(m, "persea.cli"), lambda m: _under(m, "persea.cli")) == []


def test_accounts_know_nothing_of_http():
    assert _edges(lambda m: _under(m, "persea.accounts"),
                  lambda m: _under(m, "persea.serve")) == []


def test_the_database_layer_does_not_read_the_project():
    assert _edges(lambda m: _under(m, "persea.db"), lambda m: _under(m, "persea.project")) == []


def test_the_distiller_reads_the_cache_not_the_harvest():
    assert _edges(lambda m: _under(m, "persea.distill"),
                  lambda m: _under(m, "persea.harvest")) == []


@pytest.mark.parametrize("stage", ["harvest", "distill"])
def test_the_cache_format_knows_no_stage(stage):
    assert _edges(lambda m: _under(m, "persea.cache"),
                  lambda m: _under(m, f"persea.{stage}")) == []


def test_benchmarks_import_nothing_from_tests():
    assert _edges(lambda m: _under(m, "bench"), lambda m: _under(m, "tests")) == []


def _unit(module: str) -> str | None:
    """The top-level package or module of a persea module (`persea.serve`, `persea.errors`)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "persea" and len(parts) > 1 else None


def test_no_cycle_between_top_level_packages():
    graph: dict[str, set[str]] = {}
    for src, imports in IMPORTS.items():
        for dst, _, _ in imports:
            a, b = _unit(src), _unit(dst)
            if a and b and a != b:
                graph.setdefault(a, set()).add(b)
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt])
                              if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                walk(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    assert cycles == []


HEAVY = ("torch", "transformers", "accelerate", "lm_eval", "matplotlib", "pyarrow", "vllm",
         "gguf", "safetensors", "tokenizers", "uvicorn", "fastapi", "aiohttp", "sklearn")


def _heavy_modules() -> set[str]:
    """persea modules that import a heavy library when imported (directly or through another
    persea module's top): importing one of those inside a function keeps a light command
    light, which is the one reason a persea import may sit in a function."""
    top = {m: {d for d, _, inside in imports if not inside} for m, imports in IMPORTS.items()}
    heavy = {m for m, deps in top.items() if any(d.split(".")[0] in HEAVY for d in deps)}
    while True:
        more = {m for m, deps in top.items() if m not in heavy and deps & heavy}
        if not more:
            return heavy
        heavy |= more


HEAVY_MODULES = _heavy_modules()


def test_no_function_local_import_within_a_package():
    """A module imports its own package's modules at the top; function-local imports are
    for heavy third-party libraries (and, from the CLI, the stages it dispatches to)."""
    local = [f"{src} -> {dst} (line {line})"
             for src, imports in IMPORTS.items() if src.startswith("persea.")
             for dst, line, inside in imports
             if inside and _unit(src) is not None and _unit(src) == _unit(dst)
             and dst not in HEAVY_MODULES]
    assert local == []


@pytest.mark.parametrize("package", PRODUCT)
def test_product_packages_import_no_persea_module_inside_a_function(package):
    local = [f"{src} -> {dst} (line {line})"
             for src, imports in IMPORTS.items() if _under(src, f"persea.{package}")
             for dst, line, inside in imports
             if inside and _under(dst, "persea") and dst not in HEAVY_MODULES]
    assert local == []


def test_the_cli_imports_at_the_top_unless_a_module_is_heavy():
    """A command module imports what it uses at its top; an import stays in the command's
    function only when it loads a heavy library, and its line says which (`# heavy: torch`)."""
    local = []
    for path in FILES:
        src = _module_name(path)
        if not _under(src, "persea.cli"):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for dst, line, inside in IMPORTS[src]:
            heavy = dst.split(".")[0] in HEAVY or dst in HEAVY_MODULES
            if inside and not (heavy and "# heavy: " in lines[line - 1]):
                local.append(f"{src} -> {dst} (line {line})")
    assert local == []
