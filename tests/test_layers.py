"""Every dependency one way: the package's import graph (imports at the top of a module and inside functions alike)
has no cycle, and each part keeps to the `never imports` column of shared/docs/architecture.md."""
from __future__ import annotations
from pathlib import Path
import pytest
from aimo2_nb.kaggle_build import _imports, module_files

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'aimo2_nb'

def import_graph() -> dict[str, set[str]]:
    "Module -> the package modules it imports anywhere in its source (the same scanner the submission build uses)."
    mods = {m: p for m, p in module_files(ROOT).items() if not m.endswith('._modidx')}
    return {m: _imports(p.read_text(encoding='utf-8'), m, p.name == '__init__.py', mods) - {m} for m, p in mods.items()}

GRAPH = import_graph()
CLI = {m for m in GRAPH if m == 'aimo2_nb.cli' or m.startswith('aimo2_nb.cli_')}
CONCRETE_ENGINES = {m for m in GRAPH if m.startswith('aimo2_nb.engines.') and m != 'aimo2_nb.engines.base'}
ENGINES = CONCRETE_ENGINES | {'aimo2_nb.engines.base'}
EXECUTOR = {'aimo2_nb.executor', 'aimo2_nb.zygote'}

# part -> modules it never imports (architecture.md); the CLI layer is checked for every module below
NEVER = {
    'aimo2_nb.config': {m for m in GRAPH if m not in ('aimo2_nb', 'aimo2_nb.core', 'aimo2_nb.config')},
    'aimo2_nb.answers': ENGINES | EXECUTOR,
    'aimo2_nb.vote': ENGINES | EXECUTOR,
    'aimo2_nb.tools': ENGINES | EXECUTOR,
    'aimo2_nb.prompts': ENGINES,
    'aimo2_nb.policies': ENGINES | EXECUTOR,
    'aimo2_nb.trace': ENGINES | {'aimo2_nb.solver'},
    'aimo2_nb.solver': CONCRETE_ENGINES,
    'aimo2_nb.viewer': ENGINES | {'aimo2_nb.solver'},
    'aimo2_nb.simulate': ENGINES,
    **{e: {'aimo2_nb.solver', 'aimo2_nb.policies'} for e in ENGINES},
}

def cycles(graph: dict) -> list[list[str]]:
    "The strongly connected components with more than one module (Tarjan)."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in graph:
        if v not in index: visit(v)
    return out

def test_graph_is_read():
    assert {'aimo2_nb.solver', 'aimo2_nb.prompts', 'aimo2_nb.cli', 'aimo2_nb.engines.base'} <= set(GRAPH)
    assert 'aimo2_nb.config' in GRAPH['aimo2_nb.prompts'] and 'aimo2_nb.solver' in GRAPH['aimo2_nb.kaggle']

def test_no_cycles():
    assert cycles(GRAPH) == []
    assert cycles({'a': {'b'}, 'b': {'a'}, 'c': set()}) == [['a', 'b']]  # the check itself finds one

def test_nothing_imports_the_cli_layer():
    assert {m: sorted(GRAPH[m] & CLI) for m in GRAPH if m not in CLI and GRAPH[m] & CLI} == {}

@pytest.mark.parametrize('part', sorted(NEVER))
def test_part_keeps_its_never_imports(part):
    assert part in GRAPH, part
    assert sorted(GRAPH[part] & NEVER[part]) == []
