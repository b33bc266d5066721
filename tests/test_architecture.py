"""The stages import one way (pyproject's import-linter contract), no module takes part in an import
cycle, and an import of loralab inside a function exists only where it keeps a heavy dependency out of
a fast command, with a comment saying which."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[1] / "src" / "loralab"
# The commands whose module pulls in torch / transformers / peft / matplotlib at import time; `loralab
# plan` and `loralab modules` must not pay for them (tests/cli checks plan stays torch-free).
LAZY_ALLOWED = {"cli.py"}


def test_the_layers_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--no-cache"], cwd=SRC.parents[1], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout  # the stages, and the three parts of plan


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adj[w])))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_not_even_for_type_checking() -> None:
    graph = grimp.build_graph("loralab", exclude_type_checking_imports=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The check above would pass vacuously if the finder never found anything.
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def _function_level_loralab_imports() -> list[tuple[Path, int, str, str]]:
    """(file, line, imported module, the comment on that line or the one above)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.ImportFrom)
                    and inner.level == 0
                    and (inner.module or "").startswith("loralab")
                ):
                    here, above = lines[inner.lineno - 1], lines[inner.lineno - 2]
                    comment = here.partition("#")[2] or above.strip().removeprefix("#")
                    found.append((path, inner.lineno, str(inner.module), comment.strip()))
    return found


def test_loralab_is_imported_inside_a_function_only_to_keep_a_heavy_dependency_out() -> None:
    found = _function_level_loralab_imports()
    assert found, "cli.py defers the heavy stages; the scan must see those imports"
    for path, line, module, comment in found:
        where = f"{path.relative_to(SRC)}:{line} imports {module}"
        assert path.name in LAZY_ALLOWED, f"{where} inside a function: import it at the top of the module"
        assert any(w in comment for w in ("torch", "transformers", "peft", "matplotlib")), (
            f"{where} inside a function without saying which heavy dependency that keeps out"
        )


def test_plan_and_modules_stay_free_of_torch() -> None:
    heavy = ("torch", "transformers", "peft", "matplotlib", "sklearn")
    code = f"import sys, loralab.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
