"""The replication arms of the main job (``make demo PRESET=replication``), run after the ancestry and the
distilled pool exist. Every arm uses the same data, seed, augmentation and evaluation:

1. Learngene Pool, for each stitch init: zero-shot (stitches initialised, no training) and after joint finetuning.
2. SN-Net: anchors of the member shapes trained from scratch on labels (the same images as distillation),
   stitched with lstsq, finetuned with the same recipe. Its zero-shot members alone are the *scratch* baseline.
3. Direct students: plain ViTs of a few widths at the members' depth, distilled from the ancestry with logit KD
   and labels on the same per-model budget.

Compute is counted in multiply-adds: a trained model costs 3x its forward MACs per image (forward + backward), a
frozen teacher 1x; images = optimizer steps x batch size (one process).
"""
import csv
import json
from pathlib import Path
from typing import Callable, Dict, List

import yaml

from ..checkpoint import read_pool_config
from ..evaluation import pareto_front, pareto_plot, write_markdown
from ..spec import MemberSpec, PoolSpec, enumerate_descendants, pool_params, route_macs
from . import evaluate, finetune, train_vit

__all__ = ['replicate']


def _rows(csv_path: Path) -> List[Dict]:
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r['params'] = int(r['params'])
        for k in ('gmacs', 'top1', 'top5', 'img_s', 'latency_ms'):
            if r.get(k) not in (None, ''):
                r[k] = float(r[k])
    return rows


def _images(stage_dir: Path) -> int:
    """Images a training stage consumed: its last logged step x its batch size."""
    cfg = yaml.safe_load((stage_dir / 'config.yaml').read_text())
    steps = 0
    for line in (stage_dir / 'log.jsonl').read_text().splitlines() if (stage_dir / 'log.jsonl').exists() else []:
        rec = json.loads(line)
        steps = max(steps, rec.get('step', 0))
    return steps * cfg['batch_size']


def _vit_macs(width: int, heads: int, depth: int, spec: PoolSpec) -> int:
    one = PoolSpec('one', (MemberSpec('m', width, heads, depth),), img_size=spec.img_size,
                   patch_size=spec.patch_size, in_chans=spec.in_chans, num_classes=spec.num_classes)
    return route_macs(one, (('m', 0, depth),))


def _vit_params(width: int, heads: int, depth: int, spec: PoolSpec) -> int:
    one = PoolSpec('one', (MemberSpec('m', width, heads, depth),), img_size=spec.img_size,
                   patch_size=spec.patch_size, in_chans=spec.in_chans, num_classes=spec.num_classes)
    return pool_params(one)['pool']


def replicate(preset: Dict, out: Path, run: Callable) -> Path:
    """Run every arm (reusing finished ones) and write OUTPUT/report/replication.md + replication.png.

    ``run(stage, recipe, options, done)`` is the pipeline's stage runner: it runs ``recipe`` (a recipe module)
    with ``options`` over the preset's shared ones, unless ``done`` and the stage's marker exist."""
    rep = preset['replication']
    anc_dir, dist_dir = out / 'ancestry', out / 'distill'
    anc_ckpt = str(anc_dir / 'model')
    spec = read_pool_config(dist_dir / 'pool')['model_args']['pool']
    anc_args = preset['ancestry']['model_args']
    anc_macs = _vit_macs(anc_args['embed_dim'], anc_args['num_heads'], anc_args['depth'], spec)
    eval_opts = dict(preset.get('evaluate', {}), throughput=False)
    ft_opts = dict(preset['finetune'])
    series, zero_shot, compute = {}, {}, {}
    mean_desc_macs = lambda s: sum(d.macs for d in enumerate_descendants(s)) / len(enumerate_descendants(s))  # noqa

    ancestry_cost = 3 * anc_macs * _images(anc_dir)
    distill_cost = _images(dist_dir) * (anc_macs + 3 * sum(route_macs(spec, ((m.name, 0, spec.depth),))
                                                           for m in spec.members))

    def finetune_and_eval(name: str, pool_args: Dict, init: str):
        for steps, tag in ((0, 'zeroshot'), (None, 'finetuned')):
            ft_dir = out / f'{name}_{tag}'
            opts = dict(ft_opts, **pool_args, output=str(ft_dir), stitch_init=init, teacher_checkpoint=anc_ckpt)
            if steps is not None:
                opts.update(max_steps=steps, epochs=0)  # max_steps 0 alone means 'use epochs'
            run(f'{name} {tag} (finetune)', finetune, opts, ft_dir / 'pool' / 'model.safetensors')
            ev_dir = out / f'eval_{name}_{tag}'
            run(f'{name} {tag} (evaluate)', evaluate,
                dict(eval_opts, pool=str(ft_dir / 'pool'), output=str(ev_dir)), ev_dir / 'descendants.csv')
            rows = _rows(ev_dir / 'descendants.csv')
            (series if tag == 'finetuned' else zero_shot)[name] = rows
        return out / f'{name}_finetuned'

    # 1. Learngene Pool, each stitch init
    for init in rep['stitch_inits']:
        ft_dir = finetune_and_eval(f'lgp_{init}', {'pool': str(dist_dir / 'pool')}, init)
        compute[f'lgp_{init}'] = ancestry_cost + distill_cost + _images(ft_dir) * (anc_macs + 3 * mean_desc_macs(spec))

    # 2. SN-Net: anchors of the member shapes from scratch, lstsq, same finetune
    anchors, anchor_cost = [], 0
    for m in spec.members:
        a_dir = out / f'snnet_anchor_{m.name}'
        model_args = dict(anc_args, embed_dim=m.width, depth=m.depth, num_heads=m.heads)
        run(f'snnet anchor {m.name}', train_vit, dict(rep['anchor'], model_args=model_args, output=str(a_dir)),
            a_dir / 'model' / 'model.safetensors')
        anchors.append(str(a_dir / 'model'))
        anchor_cost += 3 * route_macs(spec, ((m.name, 0, spec.depth),)) * _images(a_dir)
    ft_dir = finetune_and_eval('snnet', {'anchors': anchors}, 'lstsq')
    compute['snnet'] = anchor_cost + _images(ft_dir) * (anc_macs + 3 * mean_desc_macs(spec))
    scratch = [dict(r, name=f"scratch {r['route']}") for r in zero_shot['snnet'] if '->' not in r['route']]

    # 3. direct students: plain ViTs distilled with logit KD on the per-model budget of the distillation stage
    direct = []
    direct_cost = 0
    for width, heads in rep['direct_widths']:
        s_dir = out / f'direct_{width}'
        model_args = dict(anc_args, embed_dim=width, depth=spec.depth, num_heads=heads)
        run(f'direct student {width}', train_vit,
            dict(rep['direct'], model_args=model_args, output=str(s_dir), teacher_checkpoint=anc_ckpt),
            s_dir / 'model' / 'model.safetensors')
        macs = _vit_macs(width, heads, spec.depth, spec)
        evals = [json.loads(x)['eval'] for x in (s_dir / 'log.jsonl').read_text().splitlines() if '"eval"' in x]
        direct.append(dict(name=f'direct {width}w', route=f'ViT {width}/{heads}h/{spec.depth}',
                           params=_vit_params(width, heads, spec.depth, spec), gmacs=round(macs / 1e9, 4),
                           top1=evals[-1]['top1']))
        direct_cost += _images(s_dir) * (anc_macs + 3 * macs)
    compute['direct'] = ancestry_cost + direct_cost
    return _report(out, preset, spec, series, zero_shot, scratch, direct, compute, ancestry_cost)


def _report(out, preset, spec, series, zero_shot, scratch, direct, compute, ancestry_cost) -> Path:
    rep_dir = out / 'report'
    rep_dir.mkdir(parents=True, exist_ok=True)
    plot = {f'LGP {k[4:]} (finetuned)': v for k, v in series.items() if k.startswith('lgp_')}
    plot['SN-Net (finetuned)'] = series['snnet']
    plot['scratch members'] = scratch
    plot['direct KD students'] = direct
    pareto_plot(plot, rep_dir / 'replication.png', title=f'{spec.name} on {preset.get("dataset")}: top-1 vs GMACs')

    stored = pool_params(spec)['pool']
    budgets = sorted({r['gmacs'] for r in direct})

    def at_budget(rows, g):
        fits = [r for r in rows if r['gmacs'] <= g * 1.0001]
        return max((r['top1'] for r in fits), default=None)

    lines = [f'# Replication: Learngene Pool vs SN-Net vs direct distillation ({preset.get("dataset")})', '',
             f'Command: `make demo PRESET=replication` (seed {preset.get("seed", 0)}). Pool `{spec.name}`: '
             + ', '.join(f'{m.label} {m.width} wide/{m.heads} heads' for m in spec.members)
             + f', {spec.img_size} px, patch {spec.patch_size}. Top-1 on the test set '
             f'({preset.get("evaluate", {}).get("eval_limit") or "all"} images).', '',
             '![top-1 vs GMACs](replication.png)', '']
    head = ['method', 'stored params', 'smallest (params / GMACs / top-1)', 'largest (params / GMACs / top-1)'] + \
        [f'best top-1 <= {g:.3g} GMACs' for g in budgets] + ['mean top-1 of stitched descendants',
                                                            'training compute (TMACs)']
    table = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]

    def line(label, rows, stored_params, cost):
        small, large = min(rows, key=lambda r: r['gmacs']), max(rows, key=lambda r: r['gmacs'])
        cells = [label, f'{stored_params / 1e6:.2f}M',
                 f"{small['params'] / 1e6:.2f}M / {small['gmacs']:.3g} / {small['top1']:.2f}",
                 f"{large['params'] / 1e6:.2f}M / {large['gmacs']:.3g} / {large['top1']:.2f}"]
        cells += [('' if at_budget(rows, g) is None else f'{at_budget(rows, g):.2f}') for g in budgets]
        stitched = [r['top1'] for r in rows if '->' in str(r.get('route', ''))]
        cells.append(f'{sum(stitched) / len(stitched):.2f}' if stitched else '')
        cells.append(f'{cost / 1e12:.1f}' if cost is not None else '')
        table.append('| ' + ' | '.join(cells) + ' |')

    for k, rows in series.items():
        if k.startswith('lgp_'):
            line(f'LGP, {k[4:]} init, finetuned', rows, stored, compute[k])
            line(f'LGP, {k[4:]} init, zero-shot', zero_shot[k], stored, None)
    line('SN-Net (scratch anchors, lstsq), finetuned', series['snnet'], stored, compute['snnet'])
    line('SN-Net zero-shot', zero_shot['snnet'], stored, None)
    line('scratch members alone', scratch, sum(r['params'] for r in scratch), None)
    line('direct KD students', direct, sum(r['params'] for r in direct), compute['direct'])
    lines += table + ['',
                      f'Training compute includes the ancestry ({ancestry_cost / 1e12:.1f} TMACs) for every arm that '
                      'uses it: LGP (distillation and KD), direct students (KD); SN-Net uses it only as the KD '
                      'teacher of its finetune, which is counted, its anchors are trained from labels. A trained '
                      'model costs 3x forward MACs per image, a frozen teacher 1x; zero-shot rows add no training.',
                      '', '## Pareto fronts', '']
    for label, rows in plot.items():
        front = pareto_front([r for r in rows if r.get('top1') is not None])
        lines.append(f"- {label}: " + ', '.join(f"{r['name']} {r['gmacs']:.3g}G {r['top1']:.2f}%" for r in front))
    lines += ['', '## All descendants', '']
    for label, rows in list(series.items()) + [(f'{k} zero-shot', v) for k, v in zero_shot.items()]:
        lines.append(write_markdown(rows, title=label))
    lines.append(write_markdown(direct, title='direct KD students'))
    lines += ['## Settings', '', '```yaml', yaml.safe_dump(preset, sort_keys=False).strip(), '```', '']
    path = rep_dir / 'replication.md'
    path.write_text('\n'.join(lines))
    return path
