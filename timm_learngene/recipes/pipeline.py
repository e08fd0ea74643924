"""The main job: the whole Learngene Pool pipeline on real data, one command.

    python recipes/pipeline.py                                  # preset 'demo' (Fashion-MNIST, ~15 min, 2 CPU cores)
    python recipes/pipeline.py --preset recipes/configs/pipeline_demo.yaml --output out/demo --seed 1

Stages (each one a recipe, run in-process; one that finished before is skipped unless --force, one killed half
way resumes from its checkpoints):
 1. ancestry   recipes/train_vit.py       a ViT trained on the labels
 2. distill    recipes/distill.py         ancestry -> every pool member, one pass
 3. eval_distilled recipes/evaluate.py    the distilled members alone (before finetuning), test and validation
 4. finetune   recipes/finetune.py        stitch init + joint finetuning of every descendant
 5. evaluate   recipes/evaluate.py        top-1 (test and validation), params, GMACs, img/s of every descendant
 6. report     OUTPUT/report/report.md + pareto.png: the table, and the demo's targets, each met or not

With ``mixed_precision: auto`` the first stage that runs probes fp32 against bf16 on its model and the later stages
use its choice. ``val_size`` holds that many training images out of every stage's training; choices (the Pareto
front, the best descendant) are made on them and test numbers reported for what was chosen.

Preset ``replication`` (``make demo PRESET=replication``) runs, after stage 1, the comparison arms of
timm_learngene/recipes/replication.py once per seed (distillation and each stitch init, SN-Net with 12-block
anchors, the members' shapes from scratch, direct KD students) and writes OUTPUT/report/replication.md +
replication.png (mean +- sd over the seeds, a verdict on each of the paper's claims).

A preset is a YAML file with one section per stage (options of that recipe, checked against its option table
before any stage runs) plus the options every stage shares (``SHARED``: ``dataset``, ``data_dir``,
``bad_images``, ``seed``, ...). The report states every setting and each stage's wall time.
"""
import csv
import json
import re
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml
from accelerate.state import AcceleratorState, PartialState

from ..data.fashion_mnist import ensure_fashion_mnist
from ..errors import ConfigError
from ..evaluation import pareto_front, write_markdown
from ..pool_reader import descendant_table, read_pool_config
from ..training.loop import latest_checkpoint
from ..training.options import Option, OptionTable
from ..training.cli import run_cli
from ..training.progress import format_seconds
from . import distill, evaluate, finetune, train_nested, train_vit
from .replication import StageNotDone, check_preset, replicate

__all__ = ['OPTIONS', 'parse_args', 'run', 'main', 'load_preset', 'stage_config', 'write_report']

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'  # installed with the package; recipes/configs links here
PRESETS = {'demo': CONFIGS / 'pipeline_demo.yaml', 'replication': CONFIGS / 'pipeline_replication.yaml'}
STAGES = {'ancestry': train_vit, 'distill': distill, 'finetune': finetune, 'evaluate': evaluate}
STAGE_DONE = '.stage_done.json'
SHARED = ('dataset', 'data_dir', 'bad_images', 'seed', 'num_workers', 'fused_attn', 'mixed_precision',
          'train_limit', 'eval_limit', 'val_size', 'val_seed', 'train_split', 'eval_split')

OPTIONS = OptionTable([
    Option('preset', str, 'demo', f'a preset name ({", ".join(sorted(PRESETS))}) or a preset YAML file'),
    Option('output', str, '', "output folder ('' = out/<preset name> in the working directory)"),
    Option('seed', int, None, "seed of every stage, overriding the preset's"),
    Option('force', bool, False, 'rerun the stages that finished before, from scratch'),
    Option('report_only', bool, False, 'train nothing: write the report from the stages that have finished (the '
           "replication leaves out, per seed, every arm with an unfinished stage); a run in parts reports at any time"),
    Option('until', str, '', "stop after this stage, run or reused ('' = run all): the demo's ancestry, distill, "
           "eval_distilled, finetune or evaluate (e.g. eval_distilled for a distillation ablation); the "
           "replication's ancestry or a stage name as its run prints it in brackets, 'seed N ...' (e.g. 'seed 1 "
           "direct 128w/6 lr 0.002')"),
    Option('set', List[str], [], 'override one option of one stage, STAGE.KEY=VALUE with VALUE read as YAML, '
           'e.g. --set distill.max_steps=20', repeat=True, metavar='STAGE.KEY=VALUE'),
], __doc__, config_file=False)


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def load_preset(cfg) -> Dict:
    """The preset ``cfg.preset`` with ``cfg.set`` and ``cfg.seed`` applied."""
    path = PRESETS.get(cfg.preset, Path(cfg.preset))
    if not Path(path).is_file():
        raise ConfigError(f'pipeline: unknown preset {cfg.preset!r}; use one of {sorted(PRESETS)} or a YAML file')
    preset = yaml.safe_load(Path(path).read_text())
    for item in cfg.set:
        key, _, value = item.partition('=')
        stage, _, opt = key.partition('.')
        if not opt or stage not in preset and stage not in STAGES:
            raise ConfigError(f'pipeline: --set takes STAGE.KEY=VALUE with STAGE in {tuple(STAGES)}, got {item!r}')
        preset.setdefault(stage, {})[opt] = yaml.safe_load(value)
    if cfg.seed is not None:
        preset['seed'] = cfg.seed
    preset['name'] = preset.get('name', cfg.preset if cfg.preset in PRESETS else Path(path).stem)
    return preset


def stage_config(recipe, shared: Dict, options: Dict, source: str = 'options'):
    """The config a stage runs with: ``options`` over the ``shared`` options the recipe has, resolved through the
    recipe's option table (the same checks and conversions as its command line)."""
    values = dict({k: v for k, v in shared.items() if k in recipe.OPTIONS}, **options)
    return recipe.OPTIONS.resolve(values, source=source)


def _reset_accelerate():
    # each stage builds its own Accelerator in this process
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


class _StageRunner:
    """Runs one stage: skipped when its result ``done`` and its marker exist (unless ``force``), resumed from its
    checkpoints when it has some, else run from the start; records its wall time (a reused stage: the time its
    marker recorded when it ran, the stage's name in ``reused``)."""

    def __init__(self, shared: Dict, force: bool, until: str = '', report_only: bool = False):
        self.shared, self.force, self.until, self.report_only = shared, force, until, report_only
        self.timings: Dict[str, float] = {}
        self.reused: List[str] = []

    def __call__(self, stage: str, recipe, options: Dict, done: Path) -> None:
        # a stage counts as done only once its recipe returned: a marker written after it, next to the outputs
        # (a stage killed half way through writing them is run again, resuming from its checkpoints)
        marker = Path(options.get('output', done.parent)) / STAGE_DONE
        if stage in self.timings and done.exists() and marker.exists():
            return  # run or reused earlier in this run (a seed's students' lr choice reads the first seed's)
        if done.exists() and marker.exists() and not self.force:
            print(f'[{stage}] reusing {done}')
            self.timings[stage] = _recorded_seconds(marker)
            self.reused.append(stage)
            self._stop_after(stage, done)
            return
        if self.report_only:
            raise StageNotDone(stage)
        output = options.get('output')
        if 'resume' in recipe.OPTIONS and output and not self.force and latest_checkpoint(output) is not None:
            options = dict(options, resume=output)
            print(f'[{stage}] resuming from the checkpoints in {output}', flush=True)
        else:
            print(f'[{stage}] running', flush=True)
        cfg = stage_config(recipe, self.shared, options, source=f'pipeline stage {stage!r}')
        t = time.perf_counter()
        try:
            recipe.run(cfg)
        finally:
            _reset_accelerate()
        if self.shared.get('mixed_precision') == 'auto' and getattr(cfg, 'mixed_precision', 'auto') != 'auto':
            self.shared['mixed_precision'] = cfg.mixed_precision  # probed once, on the first stage that ran
            print(f'[{stage}] mixed_precision auto -> {cfg.mixed_precision} for the later stages', flush=True)
        self.timings[stage] = time.perf_counter() - t
        print(f'[{stage}] done in {format_seconds(self.timings[stage])} -> {done}', flush=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({'stage': stage, 'seconds': self.timings[stage]}))
        self._stop_after(stage, done)

    def _stop_after(self, stage: str, done: Path) -> None:
        if stage == self.until:
            raise _StopAfter(done)


def _recorded_seconds(marker: Path) -> float:
    """The wall time a stage's marker recorded when the stage ran; 0 for a marker without one."""
    try:
        seconds = json.loads(marker.read_text()).get('seconds', 0.0)
    except (ValueError, AttributeError):
        return 0.0
    return float(seconds) if isinstance(seconds, (int, float)) else 0.0


class _StopAfter(Exception):
    """``--until STAGE`` reached: carries the stage's result path."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def run(cfg) -> Path:
    """Run the pipeline; returns the report's path."""
    preset = load_preset(cfg)
    out = Path(cfg.output or Path('out') / preset['name'])
    shared = {k: preset[k] for k in SHARED if k in preset}
    # every stage's section is checked before the first stage runs (the paths the pipeline adds are stand-ins)
    stand_in = {'finetune': {'pool': 'POOL'}, 'evaluate': {'pool': 'POOL'},
                'replication.direct': {'teacher_checkpoint': 'ANCESTRY'}}
    sections = [(stage, recipe, preset[stage]) for stage, recipe in STAGES.items() if stage in preset]
    sections += [(f'replication.{arm}', train_vit, preset['replication'][arm])
                 for arm in ('anchor', 'direct', 'scratch') if arm in preset.get('replication', {})]
    if preset.get('replication', {}).get('nested'):
        sections.append(('replication.nested', train_nested, dict(preset['replication']['nested'],
                                                                  teacher_checkpoint='ANCESTRY')))
    for cand in preset.get('replication', {}).get('candidates', []):  # issue 28's candidate designs
        if not isinstance(cand, dict) or not isinstance(cand.get('name'), str) or \
                set(cand) - {'name', 'distill', 'finetune'}:
            raise ConfigError(f'pipeline: a replication candidate is {{name: NAME, distill: {{...}}, finetune: '
                              f'{{...}}}} (distill and finetune: overrides of those sections), got {cand!r}')
        sections += [(f"replication.candidates.{cand['name']}.distill", distill,
                      dict(preset['distill'], **cand.get('distill', {}))),
                     (f"replication.candidates.{cand['name']}.finetune", finetune,
                      dict(preset['finetune'], **cand.get('finetune', {}), pool='POOL'))]
    for stage, recipe, options in sections:
        stage_config(recipe, shared, dict(options, **stand_in.get(stage, {})), source=f'preset section {stage!r}')
    check_preset(preset)
    _check_until(cfg.until, preset)
    out.mkdir(parents=True, exist_ok=True)
    if shared.get('dataset') == 'fashion_mnist':
        shared['data_dir'] = str(ensure_fashion_mnist(shared.get('data_dir') or None))
    if cfg.report_only and cfg.force:
        raise ConfigError('pipeline: --report-only trains nothing and --force reruns every stage; give one')
    stages = _StageRunner(shared, cfg.force, cfg.until, cfg.report_only)
    try:
        path = _run_stages(preset, out, stages)
        if cfg.until:  # a replication stage name is only checked for its form
            print(f'pipeline: warning: --until {cfg.until!r} named no stage of this run, so every stage ran',
                  flush=True)
        return path
    except StageNotDone as e:  # the demo's stages run in a chain: its report needs all of them
        raise ConfigError(f'pipeline: stage {e} of {out} has not finished, and --report-only trains nothing; run '
                          f'without it to finish the stages (finished ones are reused)') from None
    except _StopAfter as stop:
        print(f'stopped after stage {cfg.until!r} (--until): {stop.path}')
        return stop.path


DEMO_STAGES = ('ancestry', 'distill', 'eval_distilled', 'finetune', 'evaluate')


def _check_until(until: str, preset: Dict) -> None:
    """ConfigError unless ``until`` ('' = no stop) can name a stage of this preset: a demo stage, or for the
    replication 'ancestry' or 'seed N ...' (its stage names depend on the arms, so the rest is not checked)."""
    if not until:
        return
    if 'replication' in preset:
        if until == 'ancestry' or re.fullmatch(r'seed \d+ \S.*', until):
            return
        raise ConfigError(f"pipeline: --until {until!r} is not a stage of the replication: give 'ancestry' or a "
                          f"stage name as the run prints it in brackets, 'seed N ...' (e.g. 'seed 0 distill')")
    if until not in DEMO_STAGES:
        raise ConfigError(f"pipeline: --until {until!r} is not a stage of the demo; give one of {', '.join(DEMO_STAGES)}")


def _run_stages(preset: Dict, out: Path, stages: _StageRunner) -> Path:
    anc = out / 'ancestry'
    stages('ancestry', train_vit, dict(preset['ancestry'], output=str(anc)), anc / 'model' / 'model.safetensors')
    if 'replication' in preset:  # one ancestry; every downstream arm (distillation included) once per seed
        report = replicate(preset, out, stages)
        print(report.read_text())
        print('wall time per stage (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in stages.timings.items()))
        return report
    dist = out / 'distill'
    stages('distill', distill, dict(preset['distill'], output=str(dist), teacher_checkpoint=str(anc / 'model')),
           dist / 'pool' / 'model.safetensors')
    evd = out / 'eval_distilled'
    members = [d.name for d in descendant_table(read_pool_config(dist / 'pool')) if len(d.route) == 1]
    stages('eval_distilled', evaluate, dict(preset.get('evaluate', {}), output=str(evd), pool=str(dist / 'pool'),
                                            descendants=members, throughput=False, write_pool=False),
           evd / 'descendants.csv')
    ft = out / 'finetune'
    stages('finetune', finetune, dict(preset['finetune'], output=str(ft), pool=str(dist / 'pool'),
                                      teacher_checkpoint=str(anc / 'model')), ft / 'pool' / 'model.safetensors')
    ev = out / 'eval'
    stages('evaluate', evaluate, dict(preset.get('evaluate', {}), output=str(ev), pool=str(ft / 'pool')),
           ev / 'descendants.csv')
    report = write_report(out, preset, stages.timings, stages.reused)
    print(report.read_text())
    print(f'report: {report}\npool:   {ft / "pool"}  (timm.create_model("local-dir:{ft / "pool"}", '
          f'descendant="s3", pretrained=True))')
    return report


def read_rows(csv_path: Path) -> List[Dict]:
    """The rows of an evaluate descendants.csv, numbers parsed."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r['params'] = int(r['params'])
        for k in ('gmacs', 'top1', 'top5', 'val_top1', 'img_s', 'latency_ms'):
            if r.get(k) not in (None, ''):
                r[k] = float(r[k])
    return rows


def last_eval(log_file: Path) -> Dict[str, float]:
    """The last evaluation record of a training log (log.jsonl), or {}."""
    found = {}
    if log_file.is_file():
        for line in log_file.read_text().splitlines():
            rec = json.loads(line)
            if 'eval' in rec:
                found = rec['eval']
    return found


def demo_checks(out: Path, targets: Dict) -> List[Dict]:
    """The demo's targets (``targets`` section of the preset), each measured and marked met or not: the ancestry's
    test top-1, the distilled members', every stitched descendant against the tiny member, the Pareto front chosen
    on the validation split rising with GMACs, the largest stitched descendant below the largest member, and how
    much each member lost in joint finetuning."""
    rows = read_rows(out / 'eval' / 'descendants.csv')
    before = {r['name']: r for r in read_rows(out / 'eval_distilled' / 'descendants.csv')}
    alone = [r for r in rows if r['name'] in before]  # the members, smallest first
    stitched = [r for r in rows if r['name'] not in before]
    tiny, base = alone[0], alone[-1]
    checks = []

    def check(what, value, ok, target):
        checks.append(dict(what=what, value=value, target=target, met=bool(ok)))
    anc = last_eval(out / 'ancestry' / 'log.jsonl').get('top1')
    if 'ancestry_top1' in targets and anc is not None:
        check('ancestry top-1 (test)', f'{anc:.2f}', anc >= targets['ancestry_top1'], f">= {targets['ancestry_top1']}")
    if 'tiny_top1' in targets:
        v = before[tiny['name']]['top1']
        check(f'distilled {tiny["route"]} top-1 (test)', f'{v:.2f}', v >= targets['tiny_top1'],
              f">= {targets['tiny_top1']}")
    if 'base_top1' in targets:
        v = before[base['name']]['top1']
        check(f'distilled {base["route"]} top-1 (test)', f'{v:.2f}', v >= targets['base_top1'],
              f">= {targets['base_top1']}")
    if 'stitched_over_tiny' in targets and stitched:
        worst = min(stitched, key=lambda r: r['top1'])
        margin = worst['top1'] - tiny['top1']
        check(f'every stitched descendant above {tiny["route"]} (worst: {worst["name"]})', f'{margin:+.2f}',
              margin >= targets['stitched_over_tiny'], f">= +{targets['stitched_over_tiny']}")
    if 'pareto_rises' in targets:
        key = 'val_top1' if all('val_top1' in r for r in rows) else 'top1'
        front = pareto_front(rows, y=key)
        tops = [r['top1'] for r in front]
        drops = [f"{a['name']}->{b['name']}" for a, b in zip(front, front[1:]) if b['top1'] < a['top1']]
        check(f'Pareto front (chosen on {key}) rises with GMACs in test top-1',
              ' < '.join(f"{r['name']} {r['top1']:.2f}" for r in front) if not drops else 'drops: ' + ', '.join(drops),
              tops == sorted(tops), 'rising')
    if 'below_base_gap' in targets:
        below = [r for r in stitched if r['gmacs'] < base['gmacs']]
        if below:
            largest = max(below, key=lambda r: r['gmacs'])
            gap = base['top1'] - largest['top1']
            check(f'largest stitched descendant below {base["route"]}\'s GMACs ({largest["name"]}) vs {base["route"]}',
                  f'{-gap:+.2f}', gap <= targets['below_base_gap'], f">= -{targets['below_base_gap']}")
    if 'member_drop' in targets:
        for r in alone:
            drop = before[r['name']]['top1'] - r['top1']
            check(f'{r["route"]} change in joint finetuning', f'{-drop:+.2f}', drop <= targets['member_drop'],
                  f">= -{targets['member_drop']}")
    return checks


def write_report(out: Path, preset: Dict, timings: Dict[str, float], reused: Sequence[str] = ()) -> Path:
    """OUTPUT/report/report.md: settings, per-stage wall time (``reused`` stages: as recorded when they ran), the
    targets met or not, the descendant table, the Pareto plot."""
    rep = out / 'report'
    rep.mkdir(parents=True, exist_ok=True)
    rows = read_rows(out / 'eval' / 'descendants.csv')
    shutil.copy(out / 'eval' / 'pareto.png', rep / 'pareto.png')
    spec = read_pool_config(out / 'finetune' / 'pool')['model_args']['pool']
    members = ', '.join(f'{m.label} ({m.width} wide, {m.heads} heads)' for m in spec.members)
    anc = preset['ancestry'].get('model_args', {})
    lines = [
        f'# Learngene Pool on {preset.get("dataset", "?")}: preset `{preset["name"]}`', '',
        f'Ancestry: ViT {anc.get("embed_dim")} wide, {anc.get("depth")} blocks, {anc.get("num_heads")} heads; '
        f'pool `{spec.name}`: {members}; {spec.img_size} px, patch {spec.patch_size}, {spec.in_chans} channel(s), '
        f'{spec.num_classes} classes. Stitch kernel {spec.stitch_kernel}, stride {spec.stitch_stride}.', '',
        'Wall time per stage (s): ' + ', '.join(f'{k} {v:.0f}' + (' (reused)' * (k in reused))
                                                for k, v in timings.items())
        + f' (total {sum(timings.values()):.0f}'
        + ('; a reused stage shows the time it took when it ran' if reused else '') + ').', '',
        *_targets_section(out, preset, timings),
        write_markdown(rows, title=f'{len(rows)} descendants (top-1 on the test set; val_top1 on the '
                                   f'{preset.get("val_size", 0)} held-out training images)'),
        '![top-1 vs GMACs](pareto.png)', '',
        '## Settings', '', '```yaml', yaml.safe_dump({k: v for k, v in preset.items()}, sort_keys=False).strip(),
        '```', '',
    ]
    path = rep / 'report.md'
    path.write_text('\n'.join(lines))
    return path


def _targets_section(out: Path, preset: Dict, timings: Dict[str, float]) -> List[str]:
    if 'targets' not in preset or not (out / 'eval_distilled' / 'descendants.csv').is_file():
        return []
    checks = demo_checks(out, preset['targets'])
    precision = {}
    for stage in ('ancestry', 'distill', 'finetune'):
        f = out / stage / 'precision.json'
        if f.is_file():
            precision[stage] = json.loads(f.read_text()).get('chosen')
    lines = ['## Targets', '', '| target | measured | bar | met |', '|---|---|---|---|']
    lines += [f"| {c['what']} | {c['value']} | {c['target']} | {'yes' if c['met'] else '**no**'} |" for c in checks]
    budget = preset['targets'].get('stage_minutes')
    total = sum(timings.values())
    if budget:
        lines.append(f'| stage time (sum over the stages; precision {precision or "?"}) | {total / 60:.1f} min '
                     f"| <= {budget} min on a 2-core CPU with bf16 | {'yes' if 0 < total <= budget * 60 else 'see note'} |")
    lines += ['', f'{sum(c["met"] for c in checks)} of {len(checks)} accuracy targets met. Accuracy is set by the '
              'step counts below, the wall time by the precision.', '']
    summary = stitched_summary(out)
    if summary:
        lines += [summary, '']
    return lines


def stitched_summary(out: Path) -> str:
    """One line on the stitched descendants of a finished demo run (``out/eval`` against the members in
    ``out/eval_distilled``): test top-1 mean (min-max) and validation mean; '' when there are none."""
    members = {r['name'] for r in read_rows(out / 'eval_distilled' / 'descendants.csv')}
    stitched = [r for r in read_rows(out / 'eval' / 'descendants.csv') if r['name'] not in members]
    if not stitched:
        return ''
    tops = [r['top1'] for r in stitched]
    line = (f'Stitched descendants ({len(stitched)}): test top-1 mean {sum(tops) / len(tops):.2f} '
            f'({min(tops):.2f}-{max(tops):.2f})')
    vals = [r['val_top1'] for r in stitched if isinstance(r.get('val_top1'), float)]
    if len(vals) == len(stitched):
        line += f', validation mean {sum(vals) / len(vals):.2f}'
    return line + '.'


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':  # accelerate launch -m timm_learngene.recipes.pipeline ...
    run_cli(main)
