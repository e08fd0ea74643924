#!/usr/bin/env python
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
recipes/replication.py (every stitch init, SN-Net from scratch anchors, scratch members, direct KD students) and
writes OUTPUT/report/replication.md + replication.png.

A preset is a YAML file with one section per stage (options of that recipe) plus the options every stage shares
(``SHARED``: ``dataset``, ``data_dir``, ``bad_images``, ``seed``, ...). The report states every setting and each
stage's wall time.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'recipes'))
from timm_learngene.training.cli import run_cli  # noqa: E402
from timm_learngene.training.loop import latest_checkpoint  # noqa: E402

PRESETS = {'demo': ROOT / 'recipes' / 'configs' / 'pipeline_demo.yaml',
           'replication': ROOT / 'recipes' / 'configs' / 'pipeline_replication.yaml'}
STAGES = ('ancestry', 'distill', 'finetune', 'evaluate')
STAGE_DONE = '.stage_done.json'
SHARED = ('dataset', 'data_dir', 'bad_images', 'seed', 'num_workers', 'fused_attn', 'mixed_precision',
          'train_limit', 'eval_limit')


def to_argv(options: Dict) -> list:
    """``{'max_steps': 4, 'eval': False, 'aug_scale': [0.7, 1]}`` -> ``['--max-steps', '4', '--no-eval', ...]``."""
    argv = []
    for k, v in options.items():
        flag = '--' + k.replace('_', '-')
        if isinstance(v, bool):
            argv.append(flag if v else '--no-' + k.replace('_', '-'))
        elif isinstance(v, (list, tuple)):
            argv += [flag, ','.join(str(x) for x in v)]
        elif isinstance(v, dict):
            argv += [flag, json.dumps(v)]
        elif v is not None:
            argv += [flag, str(v)]
    return argv


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument('--preset', default='demo', help=f'a preset name {sorted(PRESETS)} or a YAML file')
    p.add_argument('--output', default=None, help='output folder (default: out/<preset name>)')
    p.add_argument('--seed', type=int, default=None, help='override the preset seed')
    p.add_argument('--force', action='store_true', help="rerun stages that finished before, from scratch")
    p.add_argument('--set', action='append', default=[], metavar='STAGE.KEY=VALUE',
                   help='override one option, e.g. --set distill.epochs=2 (value parsed as YAML)')
    return p.parse_args(argv)


def load_preset(args) -> Dict:
    path = PRESETS.get(args.preset, Path(args.preset))
    if not Path(path).is_file():
        raise SystemExit(f'pipeline: unknown preset {args.preset!r}; use one of {sorted(PRESETS)} or a YAML file')
    preset = yaml.safe_load(Path(path).read_text())
    for item in args.set:
        key, _, value = item.partition('=')
        stage, _, opt = key.partition('.')
        if not opt or stage not in preset and stage not in STAGES:
            raise SystemExit(f'pipeline: --set takes STAGE.KEY=VALUE with STAGE in {STAGES}, got {item!r}')
        preset.setdefault(stage, {})[opt] = yaml.safe_load(value)
    if args.seed is not None:
        preset['seed'] = args.seed
    preset['name'] = preset.get('name', args.preset if args.preset in PRESETS else Path(path).stem)
    return preset


def _reset_accelerate():
    # each stage builds its own Accelerator in this process
    from accelerate.state import AcceleratorState, PartialState
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = parse_args(argv)
    preset = load_preset(args)
    out = Path(args.output or ROOT / 'out' / preset['name'])
    out.mkdir(parents=True, exist_ok=True)
    shared = {k: preset[k] for k in SHARED if k in preset}
    if shared.get('dataset') == 'fashion_mnist':
        from timm_learngene.data.fashion_mnist import ensure_fashion_mnist
        shared['data_dir'] = str(ensure_fashion_mnist(shared.get('data_dir') or None))

    import distill
    import evaluate
    import finetune
    import train_vit

    timings = {}

    def run(stage, module, options, done: Path):
        # a stage counts as done only once its recipe returned: a marker written after it, next to the outputs
        # (a stage killed half way through writing them is run again, resuming from its checkpoints)
        marker = Path(options.get('output', done.parent)) / STAGE_DONE
        if done.exists() and marker.exists() and not args.force:
            print(f'[{stage}] reusing {done}')
            timings[stage] = 0.0
            return
        output = options.get('output')
        if 'resume' in module.DEFAULTS and output and not args.force and latest_checkpoint(output) is not None:
            options = dict(options, resume=output)
            print(f'[{stage}] resuming from the checkpoints in {output}', flush=True)
        else:
            print(f'[{stage}] running', flush=True)
        t = time.perf_counter()
        module.main(to_argv(dict({k: v for k, v in shared.items() if k in module.DEFAULTS}, **options)))
        _reset_accelerate()
        timings[stage] = time.perf_counter() - t
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({'stage': stage, 'seconds': round(timings[stage], 1)}))

    anc = out / 'ancestry'
    run('ancestry', train_vit, dict(preset['ancestry'], output=str(anc)), anc / 'model' / 'model.safetensors')
    dist = out / 'distill'
    run('distill', distill, dict(preset['distill'], output=str(dist), teacher_checkpoint=str(anc / 'model')),
        dist / 'pool' / 'model.safetensors')
    if 'replication' in preset:
        from replication import replicate
        report = replicate(preset, out, shared, run, dict(distill=distill, evaluate=evaluate, finetune=finetune,
                                                          train_vit=train_vit))
        print(report.read_text())
        print('wall time per stage (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in timings.items()))
        return report
    ft = out / 'finetune'
    run('finetune', finetune, dict(preset['finetune'], output=str(ft), pool=str(dist / 'pool'),
                                   teacher_checkpoint=str(anc / 'model')), ft / 'pool' / 'model.safetensors')
    ev = out / 'eval'
    run('evaluate', evaluate, dict(preset.get('evaluate', {}), output=str(ev), pool=str(ft / 'pool')),
        ev / 'descendants.csv')
    report = write_report(out, preset, timings)
    print(report.read_text())
    print(f'report: {report}\npool:   {ft / "pool"}  (timm.create_model("local-dir:{ft / "pool"}", '
          f'descendant="s3", pretrained=True))')
    return report


def write_report(out: Path, preset: Dict, timings: Dict[str, float]) -> Path:
    """OUTPUT/report/report.md: settings, per-stage wall time, the descendant table, the Pareto plot."""
    import csv
    import shutil
    from timm_learngene.checkpoint import read_pool_config
    from timm_learngene.evaluation import write_markdown
    rep = out / 'report'
    rep.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(open(out / 'eval' / 'descendants.csv')))
    for r in rows:
        for k in ('params',):
            r[k] = int(r[k])
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


if __name__ == '__main__':
    run_cli(main)
