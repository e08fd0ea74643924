"""Nothing the project ships unpickles a file or runs remote code: a scan of the source (package, recipes,
benchmarks) by syntax tree, so comments and docstrings that mention the words do not count. Import aliases are
followed (``import torch as th`` makes ``th.load`` a ``torch.load``)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ('timm_learngene', 'recipes', 'benchmarks') for p in (ROOT / d).rglob('*.py'))
UNPICKLERS = {'pickle', 'cPickle', '_pickle', 'dill', 'cloudpickle', 'joblib', 'shelve', 'marshal'}
# safe only with weights_only=True
TORCH_LOADERS = {'torch.load', 'torch.serialization.load'}
# never safe: TorchScript is code
ALWAYS_UNSAFE = {'torch.jit.load': 'loads TorchScript (code)'}
# any mention, as a name, attribute, keyword or string
FORBIDDEN_NAMES = {
    'trust_remote_code': 'uses trust_remote_code',
    'register_for_checkpointing': 'uses register_for_checkpointing (accelerate reloads registered objects with '
                                  'weights_only=False)',
}


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _aliases(tree):
    """What each imported name stands for, as dotted names: ``import torch as th`` -> ``th: {torch}``,
    ``from torch import serialization`` -> ``serialization: {torch.serialization}``. A name bound by several
    imports keeps every meaning."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                # ``import torch.serialization`` binds ``torch``; ``import a.b as c`` binds ``c`` to ``a.b``
                out.setdefault(a.asname or a.name.split('.')[0], set()).add(a.name if a.asname else
                                                                            a.name.split('.')[0])
        elif isinstance(node, ast.ImportFrom):
            module = '.' * node.level + (node.module or '')
            for a in node.names:
                out.setdefault(a.asname or a.name, set()).add(f'{module}.{a.name}')
    return out


def _resolve(node, aliases):
    """The dotted names an ``a.b.c`` expression can stand for (a name not imported stands for itself)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return set()
    return {'.'.join([base, *reversed(parts)]) for base in aliases.get(node.id, {node.id})}


def findings(source: str, where: str):
    """Every unsafe use in ``source``: imports of unpicklers; ``torch.load`` / ``torch.serialization.load``
    called without ``weights_only=True``, imported by name or passed around uncalled; ``torch.jit.load`` at all;
    ``weights_only=False`` passed to anything (keyword or dict literal); ``numpy.load`` with
    ``allow_pickle=True``; ``trust_remote_code`` and ``register_for_checkpointing`` anywhere; ``eval``/``exec``
    calls."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    dangerous = TORCH_LOADERS | set(ALWAYS_UNSAFE)
    out = []
    for node in ast.walk(tree):
        line = f'{where}:{getattr(node, "lineno", "?")}'
        if isinstance(node, ast.Import):
            out += [f'{line} imports {a.name}' for a in node.names if a.name.split('.')[0] in UNPICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in UNPICKLERS:
            out.append(f'{line} imports from {node.module}')
        elif isinstance(node, ast.ImportFrom):
            out += [f'{line} imports {node.module}.{a.name} by name (call it through the module, with '
                    f'weights_only=True)' for a in node.names if f'{node.module}.{a.name}' in dangerous]
        if isinstance(node, (ast.Name, ast.Attribute, ast.keyword, ast.Constant)):
            text = getattr(node, 'id', None) or getattr(node, 'attr', None) or getattr(node, 'arg', None)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            if text in FORBIDDEN_NAMES:
                out.append(f'{line} {FORBIDDEN_NAMES[text]}')
        if isinstance(node, (ast.Name, ast.Attribute)) and id(node) not in called:
            out += [f'{line} refers to {name} without calling it' for name in sorted(_resolve(node, aliases))
                    if name in dangerous]
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == 'weights_only' and
                                              _is_const(v, False) for k, v in zip(node.keys, node.values)):
            out.append(f'{line} holds weights_only=False')
        if isinstance(node, ast.Call):
            f = node.func
            names = _resolve(f, aliases)
            shown = f.attr if isinstance(f, ast.Attribute) else getattr(f, 'id', None)
            kw = {k.arg: k.value for k in node.keywords}
            if names & TORCH_LOADERS and not _is_const(kw.get('weights_only'), True):
                out.append(f'{line} calls {min(names & TORCH_LOADERS)} without weights_only=True')
            elif names & set(ALWAYS_UNSAFE):
                name = min(names & set(ALWAYS_UNSAFE))
                out.append(f'{line} calls {name}: it {ALWAYS_UNSAFE[name]}')
            elif _is_const(kw.get('weights_only'), False):
                out.append(f'{line} passes weights_only=False to {shown}()')
            if 'numpy.load' in names and _is_const(kw.get('allow_pickle'), True):
                out.append(f'{line} calls numpy.load with allow_pickle=True')
            if isinstance(f, ast.Name) and f.id in ('eval', 'exec'):
                out.append(f'{line} calls {shown}()')
    return out


# (line, how many findings it must give)
BAD = [
    ('import pickle', 1),
    ('from dill import loads', 1),
    ('import torch', 0),
    ('torch.load(f)', 1),
    ('torch.load(f, weights_only=False)', 1),
    ('import numpy as np', 0),
    ('np.load(f, allow_pickle=True)', 1),
    ('m = AutoModel.from_pretrained(x, trust_remote_code=True)', 1),
    ('eval(s)', 1),
    ('from torch import load', 1),
    ('import torch as th', 0),
    ('th.load(f)', 1),
    ('from torch import serialization', 0),
    ('serialization.load(f)', 1),
    ('torch.serialization.load(f, weights_only=False)', 1),
    ('import torch.serialization as ser', 0),
    ('ser.load(f)', 1),
    ('from torch.serialization import load as L', 1),
    ('L(f)', 1),
    ('th.jit.load(f)', 1),
    ('from torch import jit as J', 0),
    ('J.load(f, map_location="cpu")', 1),
    ('accelerator.load_state(d, load_kwargs=dict(weights_only=False))', 1),
    ('load_kwargs = {"weights_only": False}', 1),
    ('accelerator.register_for_checkpointing(sampler)', 1),
    ('getattr(accelerator, "register_for_checkpointing")(sampler)', 1),
    ('import numpy as xp', 0),
    ('xp.load(f, allow_pickle=True)', 1),
    ('loader = th.load', 1),
]

OK = '''"""Docstrings may say torch.load, register_for_checkpointing and weights_only=False."""
import json
import torch
import torch as th
from torch import serialization
from accelerate.utils import load
torch.load(f, weights_only=True)
th.load(f, weights_only=True)
torch.serialization.load(f, weights_only=True)
serialization.load(f, weights_only=True)
load(f, weights_only=True)
json.load(f)
x.load(f)
np.load(f)
model.eval()
accelerator.load_state(d, load_kwargs={"weights_only": True})
'''


def test_scanner_catches_each_kind():
    found = findings('\n'.join(line for line, _ in BAD), 'bad.py')
    per_line = [sum(f.startswith(f'bad.py:{i} ') for f in found) for i in range(1, len(BAD) + 1)]
    assert per_line == [n for _, n in BAD], '\n'.join(found)
    assert len(found) == sum(n for _, n in BAD) == 22, found
    assert findings(OK, 'ok.py') == []


@pytest.mark.parametrize('path', SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_has_no_unpickling(path):
    assert findings(path.read_text(), str(path.relative_to(ROOT))) == []
