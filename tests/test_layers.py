"""The house runs one way: the package's own imports form no cycle, no module imports one on a higher floor, and no
function imports a module of the package (the sign of a dodged cycle)."""
import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

PKG = Path(__file__).resolve().parents[1] / 'timm_learngene'

# Floors, lowest first: a module may import only modules on its own floor or below (STYLE.md, "one way down").
FLOORS = [
    {'version', 'errors', 'durable', 'losses', 'checksum', 'logs', 'hub_errors', 'signals'},
    {'spec', 'data', 'pool_format'},
    {'pool_reader'},
    {'models'},
    {'pool_writer', 'distill', 'stitch_init', 'finetune', 'evaluation', 'selection', 'snnet', 'ancestry', 'profiling',
     'weight_selection', 'nested'},
    {'model_card'},
    {'hub', 'export'},
    {'training'},
    {'recipes', '__main__'},
    {'__init__'},
]


def _modules() -> Dict[str, Path]:
    out = {}
    for path in PKG.rglob('*.py'):
        parts = path.relative_to(PKG.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        out[name] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> List[str]:
    """Absolute module names an ``import`` statement of ``module`` refers to (the package's own only)."""
    if node.level:
        base = module.split('.') if is_package else module.split('.')[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = '.'.join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ''
    if not target.startswith('timm_learngene'):
        return []
    return [target] + [f'{target}.{a.name}' for a in node.names]


def _imports() -> Tuple[Dict[str, Set[str]], List[str]]:
    modules = _modules()
    graph, nested = {}, []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == '__init__.py'
        edges = set()
        top_level = set(id(n) for n in tree.body)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(name, is_package, node)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith('timm_learngene')]
            targets = [t for t in targets if t in modules and t != name]
            if not targets:
                continue
            if id(node) not in top_level:
                nested.append(f'{name} line {node.lineno} imports {targets[0]} inside a function or block')
            edges.update(targets)
        graph[name] = edges
    return graph, nested


def _floor(module: str) -> int:
    parts = module.split('.')
    key = parts[1] if len(parts) > 1 else '__init__'
    for i, floor in enumerate(FLOORS):
        if key in floor:
            return i
    raise AssertionError(f'module {module} has no floor in tests/test_layers.py FLOORS; add it where it belongs')


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if _is_parent(m, n):
                continue  # a submodule's import of its own package's __init__ is how Python imports it anyway
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []
    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def _is_parent(pkg: str, module: str) -> bool:
    return module.startswith(pkg + '.')


def test_the_package_imports_have_no_cycle():
    graph, _ = _imports()
    assert len(graph) > 20
    assert _cycle(graph) == []


def test_a_cycle_is_found():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': set()}) == []


def test_no_module_imports_a_higher_floor():
    graph, _ = _imports()
    upward = [f'{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})'
              for a, targets in sorted(graph.items()) for b in sorted(targets)
              if not _is_parent(b, a) and _floor(b) > _floor(a)]
    assert upward == []


def test_no_function_imports_the_package():
    _, nested = _imports()
    assert nested == []


def test_the_pool_file_reader_sits_below_the_models():
    graph, _ = _imports()
    assert 'timm_learngene.pool_reader' in graph['timm_learngene.models.learngene_pool']
    for low in ('timm_learngene.pool_reader', 'timm_learngene.pool_format'):
        assert not any(t.startswith(('timm_learngene.models', 'timm_learngene.pool_writer'))
                       or t == 'timm_learngene.hub' for t in graph[low])  # hub_errors (a leaf) is allowed
