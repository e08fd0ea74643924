"""Markdown report of the last ``mutmut run`` (``make mutants`` writes it to ``docs/mutants.md``; issue 17).

Reads mutmut's result files under ``mutants/`` (one ``<module>.py.meta`` per mutated module, the run time that
``make mutants`` leaves in ``mutants/run_seconds``) and the diff of every mutant that no test killed, and prints:
the counts per module, then every survivor with its diff and a one-line reason from :data:`REASONS`. A survivor
with no reason is listed under *Unexplained*: either a test is missing (add a known-value test) or the mutant is
harmless (add its reason here, one line saying why no computed value changes).

:data:`REASONS` is keyed by ``(module, function, mutated line)``: the module's file name under
``timm_learngene/``, the function (``Class.method`` for a method) and the mutated source line as mutmut's diff
shows it, stripped (several changed lines joined by `` / ``); never by mutmut's mutant numbers, which shift
whenever the code above changes. A reason whose mutant no longer exists is listed under *Stale reasons*.

Decorated functions (``@torch.no_grad()``, ``@functools.lru_cache``, ``@property``) are never mutated by mutmut
3; the report lists them so that nobody mistakes their absence for a clean result.

Run from the repository root with the virtual environment that ran mutmut: ``.venv/bin/python
tests/mutation_report.py > docs/mutants.md``.
"""
import ast
import datetime
import json
import os
import platform
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'timm_learngene'

# Classes of harmless survivors: each reason says which.
EQUIVALENT = 'equivalent'      # same result for every input the code can receive
MESSAGE = 'message text'       # changes only the text of an error, warning or log message
NOT_A_VALUE = 'not a value'    # timing, plotting, file layout: nothing the maths computes
GUARD = 'guard'                # an input check whose mutated form accepts or rejects the same inputs downstream

_COPY = ("same bytes either way: reshape(-1) reads a CPU tensor in logical order, contiguous or not, so forcing or "
         "skipping the copy only changes speed (a CUDA tensor would fail loudly in .numpy())")
_DIM = ("logits are B x classes (2-D): log_softmax's implicit dim is 1 for a 2-D tensor and dim +1 is its last "
        "dim, the same as -1")
_DRIVER = ("on CPU torch's default driver (gelsy) and gelsd both give the minimum-norm least-squares solution "
           "(1e-15 apart on a rank-deficient problem) and the name is case-insensitive; on CUDA any driver but "
           "gels raises")
_EYE_DTYPE = ("the regulariser lam*m*I is built in fp32 instead of fp64: a relative change near 4e-8, below the "
              "fp32 precision of the maps returned (measured 4e-9 on a 48 x 16 problem)")
_EYE_DEVICE = 'the same on CPU; on CUDA adding a CPU identity to a CUDA gram raises (loud, never a wrong value)'
_RANK = ("descendants come ranked by MACs ascending (enumerate_descendants), so after the first one over the MAC "
         "budget every later one is over it too")
_BETWEEN = 'ei < fi raised just above; for ei == fi the slice members[fi + 1:ei] is empty either way'

# (module, function, mutated line) -> (class, one line saying why no computed value changes). Two more key shapes:
# (module, function, mutated line, the unchanged line just before it) where one function has several identical
# mutated lines, and (module, function, '*') for every mutant of a function that computes nothing.
REASONS = {
    # checksum.py
    ('checksum.py', 'checksum', "data = (t if (t.is_contiguous() and t.device.type == 'cpu') and False else "
                                "t.detach().cpu().contiguous())"): (EQUIVALENT, _COPY),
    ('checksum.py', 'checksum', "data = (t if (t.is_contiguous() and t.device.type == 'cpu') or True else "
                                "t.detach().cpu().contiguous())"): (EQUIVALENT, _COPY),
    ('checksum.py', 'checksum', "data = (t if t.is_contiguous() or t.device.type == 'cpu' else "
                                "t.detach().cpu().contiguous())"): (EQUIVALENT, _COPY),
    ('checksum.py', 'checksum', "data = (t if t.is_contiguous() and t.device.type != 'cpu' else "
                                "t.detach().cpu().contiguous())"): (EQUIVALENT, _COPY),
    ('checksum.py', 'checksum', "data = (t if t.is_contiguous() and t.device.type == 'XXcpuXX' else "
                                "t.detach().cpu().contiguous())"): (EQUIVALENT, _COPY),
    ('checksum.py', 'checksum', "data = (t if t.is_contiguous() and t.device.type == 'CPU' else "
                                "t.detach().cpu().contiguous())"): (EQUIVALENT, _COPY),
    ('checksum.py', 'checksum_bytes', "total = int(data[:whole].view('<u8').sum(dtype=np.uint64)) if (whole) or True "
                                      "else 0"): (EQUIVALENT, 'with whole = 0 the sum of an empty uint64 array is 0'),
    ('checksum.py', 'checksum_bytes', "total = int(data[:whole].view('<u8').sum(dtype=None)) if whole else 0"):
        (EQUIVALENT, 'numpy sums a uint64 array in uint64 by default, wrapping mod 2**64 the same way'),
    ('checksum.py', 'checksum_bytes', 'if whole <= len(data):'):
        (EQUIVALENT, 'an empty tail adds int.from_bytes(8 zero bytes) = 0'),
    ('checksum.py', 'checksum_bytes', "total += int.from_bytes(data[whole:].tobytes().ljust(9, b'\\0'), 'little')"):
        (EQUIVALENT, 'one more zero byte at the high end of a little-endian number adds nothing'),
    # evaluation.py
    ('evaluation.py', 'write_csv', "with open(path, 'w', newline=None) as f:"):
        (NOT_A_VALUE, "file layout: newline='' only matters where os.linesep is CRLF (Windows); on POSIX the file is "
                      "byte-identical (pinned by test_write_markdown_and_csv_known_text)"),
    ('evaluation.py', 'write_csv', "with open(path, 'w', ) as f:"):
        (NOT_A_VALUE, "file layout: newline='' only matters where os.linesep is CRLF (Windows); on POSIX the file is "
                      "byte-identical (pinned by test_write_markdown_and_csv_known_text)"),
    ('evaluation.py', '_fmt', "if v is None or v == 'XXXX':"):
        (EQUIVALENT, "'' then falls through to str('') == ''"),
    ('evaluation.py', 'pareto_front', "front, best = [], float('-INF')"):
        (EQUIVALENT, "float() parses 'inf' in any case"),
    ('evaluation.py', 'pareto_plot', '*'):
        (NOT_A_VALUE, "draws the figure (matplotlib); the front it draws is pareto_front's, pinned by "
                      "test_pareto_front_on_a_hand_made_table"),
    ('evaluation.py', 'draw_pareto', '*'):
        (NOT_A_VALUE, "pareto_plot's drawing onto one matplotlib axes (markers, labels, the front's line, axis "
                      "titles); the front it draws is pareto_front's, pinned by test_pareto_front_on_a_hand_made_table"),
    ('evaluation.py', '_sync', '*'):
        (NOT_A_VALUE, 'CUDA synchronisation around timed runs: a no-op on CPU, unreachable by a CPU test'),
    # finetune.py
    ('finetune.py', 'RouteSampler.draw_step', 'elif k >= 1:'):
        (EQUIVALENT, 'k == 1 is taken by the if just above'),
    ('finetune.py', 'sandwich_routes', 'return alone[:2] if alone[0] == alone[-1] else [alone[0], alone[-1]]'):
        (EQUIVALENT, 'alone[0] == alone[-1] only for a pool of one member: its list has one route and [:2] == [:1]'),
    ('finetune.py', 'RouteSampler.__init__', 'self._step: Optional[int] = ""'):
        (EQUIVALENT, 'the step last drawn starts as a value no optimizer step (an int) equals: None and "" both make '
                     'the first routes_for draw'),
    ('finetune.py', 'RouteSampler.__init__', 'self._routes: List[Route] = None'):
        (EQUIVALENT, 'never read before routes_for assigns it (the first call always draws)'),
    # losses.py
    ('losses.py', 'kd_loss', 'return F.kl_div(F.log_softmax(student_logits / t, dim=None), '
                             'F.log_softmax(teacher_logits / t, dim=-1),'): (EQUIVALENT, _DIM),
    ('losses.py', 'kd_loss', 'return F.kl_div(F.log_softmax(student_logits / t, ), '
                             'F.log_softmax(teacher_logits / t, dim=-1),'): (EQUIVALENT, _DIM),
    ('losses.py', 'kd_loss', 'return F.kl_div(F.log_softmax(student_logits / t, dim=+1), '
                             'F.log_softmax(teacher_logits / t, dim=-1),'): (EQUIVALENT, _DIM),
    ('losses.py', 'kd_loss', 'return F.kl_div(F.log_softmax(student_logits / t, dim=-1), '
                             'F.log_softmax(teacher_logits / t, dim=None),'): (EQUIVALENT, _DIM),
    ('losses.py', 'kd_loss', 'return F.kl_div(F.log_softmax(student_logits / t, dim=-1), '
                             'F.log_softmax(teacher_logits / t, ),'): (EQUIVALENT, _DIM),
    ('losses.py', 'kd_loss', 'return F.kl_div(F.log_softmax(student_logits / t, dim=-1), '
                             'F.log_softmax(teacher_logits / t, dim=+1),'): (EQUIVALENT, _DIM),
    ('losses.py', 'soft_cross_entropy', 'return torch.sum(-target * F.log_softmax(logits, dim=None), dim=-1).mean()'):
        (EQUIVALENT, _DIM),
    ('losses.py', 'soft_cross_entropy', 'return torch.sum(-target * F.log_softmax(logits, ), dim=-1).mean()'):
        (EQUIVALENT, _DIM),
    ('losses.py', 'soft_cross_entropy', 'return torch.sum(-target * F.log_softmax(logits, dim=+1), dim=-1).mean()'):
        (EQUIVALENT, _DIM),
    ('losses.py', 'soft_cross_entropy', 'return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=+1).mean()'):
        (EQUIVALENT, _DIM),
    # selection.py
    ('selection.py', 'select', 'break', 'if max_gmacs is not None and d.gmacs > max_gmacs:'): (EQUIVALENT, _RANK),
    ('selection.py', 'select', "f'the smallest is {smallest.name} ({smallest.gmacs:.3f} GMACs, "
                            "{smallest.params / 1000001.0:.2f}M params'"):
        (MESSAGE, 'the parameter count printed in the BudgetError text, in 0.01M steps where a 1e-6 relative change '
                  'seldom shows'),
    # spec.py
    ('spec.py', 'PoolSpec.__post_init__', 'if self.img_size / self.patch_size > _MAX_GRID:'):
        (EQUIVALENT, 'img_size is a multiple of patch_size (checked just above), so / and // agree'),
    ('spec.py', 'validate_route', 'between = [m.name for m in spec.members[fi + 1:ei]] if (ei > fi) or True else []'):
        (EQUIVALENT, _BETWEEN),
    ('spec.py', 'validate_route', 'between = [m.name for m in spec.members[fi + 1:ei]] if ei >= fi else []'):
        (EQUIVALENT, _BETWEEN),
    # stitch_init.py
    ('stitch_init.py', '_Silent.step', '*'):
        (NOT_A_VALUE, 'the progress display used when none is passed: it ignores its argument'),
    ('stitch_init.py', 'lstsq_affine', 'xa = torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=None)], dim=1)'):
        (EQUIVALENT, 'torch.cat promotes the column of ones (exact in any float dtype) to float64'),
    ('stitch_init.py', 'lstsq_affine', 'xa = torch.cat([x.double(), x.new_ones(x.shape[0], 1, )], dim=1)'):
        (EQUIVALENT, 'torch.cat promotes the column of ones (exact in any float dtype) to float64'),
    ('stitch_init.py', 'lstsq_affine', 'sol = torch.linalg.lstsq(xa, y.double(), driver=None).solution'):
        (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'lstsq_affine', 'sol = torch.linalg.lstsq(xa, y.double(), ).solution'): (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'lstsq_affine', "sol = torch.linalg.lstsq(xa, y.double(), driver='gelsd' if "
                                       "(x.device.type == 'cpu') and False else None).solution"): (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'lstsq_affine', "sol = torch.linalg.lstsq(xa, y.double(), driver='gelsd' if "
                                       "(x.device.type == 'cpu') or True else None).solution"): (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'lstsq_affine', "sol = torch.linalg.lstsq(xa, y.double(), driver='GELSD' if "
                                       "x.device.type == 'cpu' else None).solution"): (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'lstsq_affine', "sol = torch.linalg.lstsq(xa, y.double(), driver='gelsd' if "
                                       "x.device.type != 'cpu' else None).solution"): (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'lstsq_affine', "sol = torch.linalg.lstsq(xa, y.double(), driver='gelsd' if "
                                       "x.device.type == 'XXcpuXX' else None).solution"): (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'lstsq_affine', "sol = torch.linalg.lstsq(xa, y.double(), driver='gelsd' if "
                                       "x.device.type == 'CPU' else None).solution"): (EQUIVALENT, _DRIVER),
    ('stitch_init.py', 'ridge_compose', 'reg = lam * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=None, '
                                        'device=gram.device)'): (EQUIVALENT, _EYE_DTYPE),
    ('stitch_init.py', 'ridge_compose', 'reg = lam * gram.diagonal().mean() * torch.eye(gram.shape[0], '
                                        'device=gram.device)'): (EQUIVALENT, _EYE_DTYPE),
    ('stitch_init.py', 'ridge_compose', 'reg = lam * gram.diagonal().mean() * torch.eye(gram.shape[0], '
                                        'dtype=gram.dtype, device=None)'): (EQUIVALENT, _EYE_DEVICE),
    ('stitch_init.py', 'ridge_compose', 'reg = lam * gram.diagonal().mean() * torch.eye(gram.shape[0], '
                                        'dtype=gram.dtype, )'): (EQUIVALENT, _EYE_DEVICE),
    ('stitch_init.py', 'ridge_compose', 'reg = lam * gram.diagonal().mean() * torch.eye(gram.shape[1], '
                                        'dtype=gram.dtype, device=gram.device)'):
        (EQUIVALENT, "gram = W_e^T W_e is square"),
}

_STATUS = {  # mutmut 3's exit codes (mutmut/stats.py: status_by_exit_code)
    1: 'killed', 3: 'killed', 0: 'survived', 5: 'no tests', 33: 'no tests', 34: 'skipped', 35: 'suspicious',
    36: 'timeout', 37: 'caught by type check', 24: 'timeout', -24: 'timeout', 152: 'timeout', 255: 'timeout',
    -11: 'segfault', -9: 'segfault', 2: 'interrupted', None: 'not checked',
}
# a timeout or a crash is a detected mutant (the tests hang in an endless loop, or their process dies: mutmut calls
# a kill by signal 'segfault'), listed for information only
_DETECTED = ('timeout', 'segfault')
_NOT_KILLED = ('survived', 'no tests', 'suspicious', 'skipped', 'interrupted', 'not checked')


def _only_mutate():
    import tomllib
    cfg = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['mutmut']
    return [p for p in cfg.get('only_mutate', [])]


def _function(mutant: str) -> str:
    """``timm_learngene.spec.xǁPoolSpecǁ__post_init____mutmut_3`` -> ``PoolSpec.__post_init__``."""
    mangled = mutant.rpartition('__mutmut_')[0].rpartition('.')[2]
    if mangled.startswith('xǁ'):
        cls, _, fn = mangled[2:].partition('ǁ')
        return f'{cls}.{fn}'
    return mangled[2:]


def _diff(mutant: str, path: str) -> str:
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        return get_diff_for_mutant(mutant, path=path)
    except ImportError:  # another mutmut layout: ask its command line
        out = subprocess.run([sys.executable, '-m', 'mutmut', 'show', mutant], capture_output=True, text=True,
                             cwd=ROOT)
        return out.stdout.partition('\n')[2]


def _changed(diff: str):
    """(removed lines, added lines, the unchanged line just before them) of a unified diff, each stripped."""
    lines = [ln for ln in diff.splitlines() if not ln.startswith(('---', '+++', '@@'))]
    minus = [ln[1:].strip() for ln in lines if ln.startswith('-')]
    plus = [ln[1:].strip() for ln in lines if ln.startswith('+')]
    before = ''
    for ln in lines:
        if ln.startswith(('-', '+')):
            break
        if ln.strip():
            before = ln.strip()
    return minus, plus, before


def _decorated(path: Path):
    """Functions of ``path`` that mutmut skips: any decorator but a lone @staticmethod / @classmethod."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(body, prefix=''):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f'{prefix}{node.name}.')
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.decorator_list:
                d = node.decorator_list
                if len(d) == 1 and isinstance(d[0], ast.Name) and d[0].id in ('staticmethod', 'classmethod'):
                    continue
                out.append((f'{prefix}{node.name}', ', '.join('@' + ast.unparse(x) for x in d)))
    visit(tree.body)
    return out


def _md(text: str) -> str:
    return text.replace('|', '\\|').replace('`', "'")


def main() -> int:
    os.chdir(ROOT)
    metas = sorted((ROOT / 'mutants').glob(f'{PACKAGE}/**/*.py.meta'))
    if not metas:
        print('no mutmut results under mutants/: run `make mutants` first', file=sys.stderr)
        return 1
    counts = defaultdict(Counter)
    survivors, timeouts = [], []  # (module, function, mutant, status, minus, plus, line before)
    for meta in metas:
        path = str(meta.relative_to(ROOT / 'mutants'))[:-len('.meta')]
        module = path[len(PACKAGE) + 1:]
        for mutant, code in json.loads(meta.read_text())['exit_code_by_key'].items():
            status = _STATUS.get(code, 'suspicious')
            counts[module][status] += 1
            if status in _NOT_KILLED or status in _DETECTED:
                minus, plus, before = _changed(_diff(mutant, path))
                row = (module, _function(mutant), mutant, status, minus, ' / '.join(plus), before)
                (timeouts if status in _DETECTED else survivors).append(row)

    explained, unexplained, used = [], [], set()
    for module, fn, mutant, status, minus, plus, before in survivors:
        for key in ((module, fn, plus, before), (module, fn, plus), (module, fn, '*')):
            if status in ('survived', 'no tests') and key in REASONS:
                used.add(key)
                explained.append(((module, fn, plus), status, minus, REASONS[key]))
                break
        else:
            unexplained.append(((module, fn, plus), status, minus, mutant, before))

    for pattern in _only_mutate():   # a module whose functions are all decorated has no mutants and no .meta
        for path in ROOT.glob(pattern):
            counts.setdefault(str(path.relative_to(ROOT / PACKAGE)), Counter())
    seconds = ROOT / 'mutants' / 'run_seconds'
    run_time = seconds.read_text().split() if seconds.exists() else None
    statuses = ['killed', 'survived', 'no tests', 'timeout', 'suspicious', 'segfault', 'skipped', 'not checked']
    statuses += sorted({s for c in counts.values() for s in c} - set(statuses))
    total = Counter()
    for c in counts.values():
        total.update(c)

    p = print
    p('# Mutation testing')
    p()
    p('Generated by `make mutants` (mutmut over the modules that hold the maths, against the fast tests; '
      '`[tool.mutmut]` in pyproject.toml) and `tests/mutation_report.py`. Not part of CI. Every mutant that no test '
      'kills is listed with a one-line reason why it changes no computed value; one without a reason is listed under '
      '*Unexplained* and needs a known-value test (tests/test_known_values*.py) or a reason in the script.')
    p()
    p(f'- run: {datetime.datetime.fromtimestamp(max(m.stat().st_mtime for m in metas)).strftime("%Y-%m-%d %H:%M")} '
      f'(last result written), mutmut {_mutmut_version()}, Python {platform.python_version()}')
    if run_time:
        secs = int(float(run_time[0]))
        extra = f' ({" ".join(run_time[1:])})' if len(run_time) > 1 else ''
        p(f'- run time of `mutmut run`: {secs // 60} min {secs % 60} s{extra}')
    p(f'- modules: {", ".join("`" + m + "`" for m in _only_mutate())}')
    p(f'- mutants: {sum(total.values())}; ' + ', '.join(f'{s} {total[s]}' for s in statuses if total[s]))
    p(f'- not killed: {len(survivors)}, of which explained {len(explained)}, unexplained {len(unexplained)}')
    p()
    p('| module | ' + ' | '.join(statuses) + ' |')
    p('|---|' + '---|' * len(statuses))
    for module in sorted(counts):
        p(f'| {module} | ' + ' | '.join(str(counts[module][s]) for s in statuses) + ' |')
    p('| **all** | ' + ' | '.join(str(total[s]) for s in statuses) + ' |')
    p()
    p('"no tests": no selected test reaches the function (mutmut runs, per mutant, only the tests that called it). '
      '"timeout" (the tests ran past their time limit: an endless loop) and "segfault" (their process was killed by '
      'a signal) are detected, like a kill.')
    p()

    p('## Unexplained')
    p()
    if not unexplained:
        p('None.')
    else:
        p('| module | function | status | original | mutated | line before | mutant |')
        p('|---|---|---|---|---|---|---|')
        for (module, fn, plus), status, minus, mutant, before in unexplained:
            p(f'| {module} | {fn} | {status} | `{_md(" / ".join(minus))}` | `{_md(plus)}` | `{_md(before)}` | '
              f'{mutant} |')
    p()

    p('## Explained survivors')
    p()
    by_class = Counter(cls for _, _, _, (cls, _) in explained)
    p('By class: ' + (', '.join(f'{c} {n}' for c, n in by_class.most_common()) or 'none') + '. Classes: '
      f'*{EQUIVALENT}* (same result for every input), *{MESSAGE}* (only an error or log text changes), '
      f'*{NOT_A_VALUE}* (timing, plots, files), *{GUARD}* (an input check; the mutated check accepts the same '
      'inputs that reach the maths).')
    p()
    if explained:
        p('| module | function | status | original | mutated | class | reason |')
        p('|---|---|---|---|---|---|---|')
        for (module, fn, plus), status, minus, (cls, why) in sorted(explained):
            p(f'| {module} | {fn} | {status} | `{_md(" / ".join(minus))}` | `{_md(plus)}` | {cls} | {_md(why)} |')
        p()

    if timeouts:
        p('## Timeouts and crashes (detected)')
        p()
        p('| module | function | status | original | mutated |')
        p('|---|---|---|---|---|')
        for module, fn, _, status, minus, plus, _ in sorted(timeouts):
            p(f'| {module} | {fn} | {status} | `{_md(" / ".join(minus))}` | `{_md(plus)}` |')
        p()

    stale = sorted(set(REASONS) - used)
    if stale:
        p('## Stale reasons')
        p()
        p('Reasons in tests/mutation_report.py whose mutant no longer survives (killed now, or the code changed); '
          'delete them:')
        p()
        for key in stale:
            p(f'- {key[0]} `{key[1]}`: `{_md(key[2])}`' + (f' after `{_md(key[3])}`' if len(key) > 3 else ''))
        p()

    p('## Not mutated: decorated functions')
    p()
    p('mutmut 3 skips every function with a decorator other than a lone `@staticmethod` / `@classmethod`, so '
      'these are not in the counts above. Once, on a scratch copy with each `@torch.no_grad()` turned into a '
      '`with torch.no_grad():` block and `@lru_cache` dropped (2026-12-01), mutmut made 245 mutants of `accuracy`, '
      '`member_features`, `init_stitches` and `_ranked`; the tests killed 236 of them after tests for a one-sample '
      'accuracy, the default stitch init and lambda, and the refusals of `init_stitches` were added '
      '(tests/test_known_values_2.py). The 9 left are equivalent: `dim=+1` or no dim on 2-D logits (3), '
      'device arguments that are the default on CPU (4), `feats = None` where only the lstsq branch reads it, and '
      '`member_features` batch size 33 instead of 32 (chunks of an eval-mode forward give the same features). '
      'Properties are not mutable by mutmut at all; their values enter the hand-computed params/MACs tests.')
    p()
    for pattern in _only_mutate():
        for path in sorted(ROOT.glob(pattern)):
            for fn, decorators in _decorated(path):
                p(f'- {path.relative_to(ROOT / PACKAGE)} `{fn}` ({decorators})')
    return 0


def _mutmut_version() -> str:
    try:
        from importlib.metadata import version
        return version('mutmut')
    except Exception:  # pragma: no cover
        return '?'


if __name__ == '__main__':
    sys.exit(main())
