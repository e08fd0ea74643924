"""The main job: the whole Learngene Pool pipeline on real data, one command.

    python recipes/pipeline.py                                  # preset 'demo' (Fashion-MNIST, ~15 min, 2 CPU cores)
    python recipes/pipeline.py --preset recipes/configs/pipeline_demo.yaml --output out/demo --seed 1

Stages (each one a recipe, run in-process; one that finished before is skipped unless --force, one killed half
way resumes from its checkpoints):
 1. ancestry   recipes/train_vit.py       a ViT trained on the labels
 2. distill    recipes/distill.py         ancestry -> every pool member, one pass
 3. finetune   recipes/finetune.py        stitch init + joint finetuning of every descendant
 4. evaluate   recipes/evaluate.py        top-1, params, GMACs, img/s of every descendant
 5. report     OUTPUT/report/report.md + pareto.png, and the table printed

Preset ``replication`` (``make demo PRESET=replication``) runs, after stages 1-2, the comparison arms of
timm_learngene/recipes/replication.py (every stitch init, SN-Net from scratch anchors, scratch members, direct KD
students) and writes OUTPUT/report/replication.md + replication.png.

A preset is a YAML file with one section per stage (options of that recipe, checked against its option table
before any stage runs) plus the options every stage shares (``SHARED``: ``dataset``, ``data_dir``,
``bad_images``, ``seed``, ...). The report states every setting and each stage's wall time.
"""
import csv
import json
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml
from accelerate.state import AcceleratorState, PartialState

from ..checkpoint import read_pool_config
from ..data.fashion_mnist import ensure_fashion_mnist
from ..errors import ConfigError
from ..evaluation import write_markdown
from ..training.loop import latest_checkpoint
from ..training.options import Option, OptionTable
from . import distill, evaluate, finetune, train_vit
from .replication import replicate

__all__ = ['OPTIONS', 'parse_args', 'run', 'main', 'load_preset', 'stage_config', 'write_report']

CHECKOUT = Path(__file__).resolve().parents[2]  # the presets ship in the checkout's recipes/configs
PRESETS = {'demo': CHECKOUT / 'recipes' / 'configs' / 'pipeline_demo.yaml',
           'replication': CHECKOUT / 'recipes' / 'configs' / 'pipeline_replication.yaml'}
STAGES = {'ancestry': train_vit, 'distill': distill, 'finetune': finetune, 'evaluate': evaluate}
STAGE_DONE = '.stage_done.json'
SHARED = ('dataset', 'data_dir', 'bad_images', 'seed', 'num_workers', 'fused_attn', 'mixed_precision',
          'train_limit', 'eval_limit')

OPTIONS = OptionTable([
    Option('preset', str, 'demo', f'a preset name ({", ".join(sorted(PRESETS))}) or a preset YAML file'),
    Option('output', str, '', "output folder ('' = out/<preset name> in the checkout)"),
    Option('seed', int, None, "seed of every stage, overriding the preset's"),
    Option('force', bool, False, 'rerun the stages that finished before, from scratch'),
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
    checkpoints when it has some, else run from the start; records its wall time."""

    def __init__(self, shared: Dict, force: bool):
        self.shared, self.force = shared, force
        self.timings: Dict[str, float] = {}

    def __call__(self, stage: str, recipe, options: Dict, done: Path) -> None:
        # a stage counts as done only once its recipe returned: a marker written after it, next to the outputs
        # (a stage killed half way through writing them is run again, resuming from its checkpoints)
        marker = Path(options.get('output', done.parent)) / STAGE_DONE
        if done.exists() and marker.exists() and not self.force:
            print(f'[{stage}] reusing {done}')
            self.timings[stage] = 0.0
            return
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
        self.timings[stage] = time.perf_counter() - t
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({'stage': stage, 'seconds': round(self.timings[stage], 1)}))


def run(cfg) -> Path:
    """Run the pipeline; returns the report's path."""
    preset = load_preset(cfg)
    out = Path(cfg.output or CHECKOUT / 'out' / preset['name'])
    shared = {k: preset[k] for k in SHARED if k in preset}
    # every stage's section is checked before the first stage runs (the paths the pipeline adds are stand-ins)
    stand_in = {'finetune': {'pool': 'POOL'}, 'evaluate': {'pool': 'POOL'},
                'replication.direct': {'teacher_checkpoint': 'ANCESTRY'}}
    sections = [(stage, recipe, preset[stage]) for stage, recipe in STAGES.items() if stage in preset]
    sections += [(f'replication.{arm}', train_vit, preset['replication'][arm]) for arm in ('anchor', 'direct')
                 if arm in preset.get('replication', {})]
    for stage, recipe, options in sections:
        stage_config(recipe, shared, dict(options, **stand_in.get(stage, {})), source=f'preset section {stage!r}')
    out.mkdir(parents=True, exist_ok=True)
    if shared.get('dataset') == 'fashion_mnist':
        shared['data_dir'] = str(ensure_fashion_mnist(shared.get('data_dir') or None))
    stages = _StageRunner(shared, cfg.force)

    anc = out / 'ancestry'
    stages('ancestry', train_vit, dict(preset['ancestry'], output=str(anc)), anc / 'model' / 'model.safetensors')
    dist = out / 'distill'
    stages('distill', distill, dict(preset['distill'], output=str(dist), teacher_checkpoint=str(anc / 'model')),
           dist / 'pool' / 'model.safetensors')
    if 'replication' in preset:
        report = replicate(preset, out, stages)
        print(report.read_text())
        print('wall time per stage (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in stages.timings.items()))
        return report
    ft = out / 'finetune'
    stages('finetune', finetune, dict(preset['finetune'], output=str(ft), pool=str(dist / 'pool'),
                                      teacher_checkpoint=str(anc / 'model')), ft / 'pool' / 'model.safetensors')
    ev = out / 'eval'
    stages('evaluate', evaluate, dict(preset.get('evaluate', {}), output=str(ev), pool=str(ft / 'pool')),
           ev / 'descendants.csv')
    report = write_report(out, preset, stages.timings)
    print(report.read_text())
    print(f'report: {report}\npool:   {ft / "pool"}  (timm.create_model("local-dir:{ft / "pool"}", '
          f'descendant="s3", pretrained=True))')
    return report


def write_report(out: Path, preset: Dict, timings: Dict[str, float]) -> Path:
    """OUTPUT/report/report.md: settings, per-stage wall time, the descendant table, the Pareto plot."""
    rep = out / 'report'
    rep.mkdir(parents=True, exist_ok=True)
    with open(out / 'eval' / 'descendants.csv') as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r['params'] = int(r['params'])
        for k in ('gmacs', 'top1', 'top5', 'img_s', 'latency_ms'):
            if r.get(k) not in (None, ''):
                r[k] = float(r[k])
    shutil.copy(out / 'eval' / 'pareto.png', rep / 'pareto.png')
    spec = read_pool_config(out / 'finetune' / 'pool')['model_args']['pool']
    members = ', '.join(f'{m.label} ({m.width} wide, {m.heads} heads)' for m in spec.members)
    anc = preset['ancestry'].get('model_args', {})
    lines = [
        f'# Learngene Pool on {preset.get("dataset", "?")}: preset `{preset["name"]}`', '',
        f'Ancestry: ViT {anc.get("embed_dim")} wide, {anc.get("depth")} blocks, {anc.get("num_heads")} heads; '
        f'pool `{spec.name}`: {members}; {spec.img_size} px, patch {spec.patch_size}, {spec.in_chans} channel(s), '
        f'{spec.num_classes} classes. Stitch kernel {spec.stitch_kernel}, stride {spec.stitch_stride}.', '',
        'Wall time per stage (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in timings.items())
        + f' (total {sum(timings.values()):.0f}; 0 = reused).', '',
        write_markdown(rows, title=f'{len(rows)} descendants (top-1 on the test set)'),
        '![top-1 vs GMACs](pareto.png)', '',
        '## Settings', '', '```yaml', yaml.safe_dump({k: v for k, v in preset.items()}, sort_keys=False).strip(),
        '```', '',
    ]
    path = rep / 'report.md'
    path.write_text('\n'.join(lines))
    return path


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))
