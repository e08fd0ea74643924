"""Nothing the project ships unpickles a file or runs remote code: a scan of the source (package, recipes,
benchmarks) by syntax tree, so comments and docstrings that mention the words do not count."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ('timm_learngene', 'recipes', 'benchmarks') for p in (ROOT / d).rglob('*.py'))
UNPICKLERS = {'pickle', 'cPickle', '_pickle', 'dill', 'cloudpickle', 'joblib', 'shelve', 'marshal'}


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def findings(source: str, where: str):
    """Every unsafe use in ``source``: imports of unpicklers, ``torch.load`` without ``weights_only=True``,
    ``numpy.load`` with ``allow_pickle=True``, ``trust_remote_code`` anywhere, ``eval``/``exec`` calls."""
    out = []
    for node in ast.walk(ast.parse(source)):
        line = f'{where}:{getattr(node, "lineno", "?")}'
        if isinstance(node, ast.Import):
            out += [f'{line} imports {a.name}' for a in node.names if a.name.split('.')[0] in UNPICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in UNPICKLERS:
            out.append(f'{line} imports from {node.module}')
        elif isinstance(node, ast.ImportFrom) and node.module == 'torch' and any(a.name == 'load' for a in node.names):
            out.append(f'{line} imports torch.load by name (call it as torch.load(..., weights_only=True))')
        elif isinstance(node, (ast.Name, ast.Attribute, ast.keyword, ast.Constant)):
            text = getattr(node, 'id', None) or getattr(node, 'attr', None) or getattr(node, 'arg', None)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value == 'trust_remote_code':
                text = node.value
            if text == 'trust_remote_code':
                out.append(f'{line} uses trust_remote_code')
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, 'id', None)
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            kw = {k.arg: k.value for k in node.keywords}
            if name == 'load' and owner == 'torch' and not _is_true(kw.get('weights_only')):
                out.append(f'{line} calls torch.load without weights_only=True')
            if name == 'load' and owner in ('np', 'numpy') and _is_true(kw.get('allow_pickle')):
                out.append(f'{line} calls numpy.load with allow_pickle=True')
            if isinstance(f, ast.Name) and f.id in ('eval', 'exec'):
                out.append(f'{line} calls {name}()')
    return out


def test_scanner_catches_each_kind():
    bad = '\n'.join([
        'import pickle', 'from dill import loads', 'import torch', 'torch.load(f)',
        'torch.load(f, weights_only=False)', 'import numpy as np', 'np.load(f, allow_pickle=True)',
        'm = AutoModel.from_pretrained(x, trust_remote_code=True)', 'eval(s)', 'from torch import load',
    ])
    found = findings(bad, 'bad.py')
    assert len(found) == 8, found
    assert findings('import torch\ntorch.load(f, weights_only=True)\nnp.load(f)\nmodel.eval()\n', 'ok.py') == []


@pytest.mark.parametrize('path', SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_has_no_unpickling(path):
    assert findings(path.read_text(), str(path.relative_to(ROOT))) == []
