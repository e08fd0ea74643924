"""The replication arms of the main job (``make demo PRESET=replication``), run after the ancestry exists. One
ancestry is shared by every arm and seed; every downstream arm runs once per seed in ``replication.seeds`` (the
validation split stays the same images), with the same data, augmentation and evaluation:

1. Learngene Pool, for each stitch init: the ancestry distilled into the pool (per seed), stitch init, joint
   finetuning; zero-shot (init, no training) on the seeds in ``zero_shot_seeds``.
2. SN-Net as SN-Net builds it: anchors of the ancestry's depth at the members' widths, stitched with lstsq and
   finetuned with the same recipe. Its widest anchor is the ancestry itself (as in the paper, where DeiT-B is both
   Learngene Pool's ancestry and SN-Net's largest anchor); the narrower ones are trained from scratch on labels.
3. The members' shapes trained from scratch on labels (as many steps as distillation + finetuning).
4. Direct students: plain ViTs of a few widths at the members' depth, distilled from the ancestry with logit KD
   and labels on that same budget.

Every choice is made on the validation split: the best descendant within a GMACs budget is the one with the best
``val_top1``; its test top-1 is reported (mean +- sd over the seeds). Single-model arms (scratch, direct) have
no choice to make: within a budget their largest model counts. Compute is counted in multiply-adds: a trained
model costs 3x its forward MACs per image (forward + backward), a frozen teacher 1x; images = optimizer steps x
batch size (one process).
"""
import csv
import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import yaml

from ..checkpoint import read_pool_config
from ..evaluation import pareto_front, pareto_plot, write_markdown
from ..spec import MemberSpec, PoolSpec, enumerate_descendants, pool_params, route_macs
from . import distill, evaluate, finetune, train_vit

__all__ = ['replicate', 'summarise', 'best_at']

TEST_IMAGES = {'fashion_mnist': 10000}  # test-set size, for the binomial error of a single seed


def _rows(csv_path: Path) -> List[Dict]:
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r['params'] = int(r['params'])
        for k in ('gmacs', 'top1', 'top5', 'val_top1', 'img_s', 'latency_ms'):
            if r.get(k) not in (None, ''):
                r[k] = float(r[k])
    return rows


def _steps(stage_dir: Path) -> int:
    """Optimizer steps a training stage took: its last logged step."""
    steps = 0
    log = stage_dir / 'log.jsonl'
    for line in log.read_text().splitlines() if log.exists() else []:
        steps = max(steps, json.loads(line).get('step', 0))
    return steps


def _images(stage_dir: Path) -> int:
    """Images a training stage consumed: its last logged step x its batch size."""
    cfg = yaml.safe_load((stage_dir / 'config.yaml').read_text())
    return _steps(stage_dir) * cfg['batch_size']


def _one(width: int, heads: int, depth: int, spec: PoolSpec) -> PoolSpec:
    return PoolSpec('one', (MemberSpec('m', width, heads, depth),), img_size=spec.img_size,
                    patch_size=spec.patch_size, in_chans=spec.in_chans, num_classes=spec.num_classes)


def _vit_macs(width: int, heads: int, depth: int, spec: PoolSpec) -> int:
    return route_macs(_one(width, heads, depth, spec), (('m', 0, depth),))


def _vit_params(width: int, heads: int, depth: int, spec: PoolSpec) -> int:
    return pool_params(_one(width, heads, depth, spec))['pool']


def _last_top1(stage_dir: Path) -> float:
    evals = [json.loads(x)['eval'] for x in (stage_dir / 'log.jsonl').read_text().splitlines() if '"eval"' in x]
    if not evals:
        raise RuntimeError(f'{stage_dir}: the training log has no evaluation; the stage needs an eval set')
    return evals[-1]['top1']


def best_at(rows: Sequence[Dict], gmacs: float) -> Optional[float]:
    """Test top-1 of the model chosen within ``gmacs``: the best ``val_top1`` when every candidate has one, else the
    largest model (single-model arms); None when nothing fits."""
    fits = [r for r in rows if r['gmacs'] <= gmacs * 1.0001 and r.get('top1') is not None]
    if not fits:
        return None
    if all(r.get('val_top1') is not None for r in fits):
        return max(fits, key=lambda r: (r['val_top1'], -r['gmacs']))['top1']
    return max(fits, key=lambda r: r['gmacs'])['top1']


def summarise(values: Sequence[float]) -> Dict[str, float]:
    """Mean, sample sd (0 for one value) and count."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return dict(mean=mean, sd=sd, n=n)


def _fmt(values: Sequence[float]) -> str:
    if not values:
        return ''
    s = summarise(values)
    return f"{s['mean']:.2f} +- {s['sd']:.2f}" if s['n'] > 1 else f"{s['mean']:.2f}"


def _stderr(values: Sequence[float], test_images: Optional[int]) -> float:
    """Standard error of a mean top-1 (in points): from the seeds' spread, never below the test set's binomial
    error of one evaluation."""
    s = summarise(values)
    binom = math.sqrt(s['mean'] * (100 - s['mean']) / test_images) if test_images else 0.0
    spread = s['sd'] / math.sqrt(s['n']) if s['n'] > 1 else 0.0
    return max(spread, binom / math.sqrt(s['n']))


def compare(a: Sequence[float], b: Sequence[float], test_images: Optional[int]) -> str:
    """'higher' / 'lower' when ``a``'s mean differs from ``b``'s by more than twice their combined standard error,
    else 'tie'."""
    diff = summarise(a)['mean'] - summarise(b)['mean']
    noise = 2 * math.sqrt(_stderr(a, test_images) ** 2 + _stderr(b, test_images) ** 2)
    return 'higher' if diff > noise else 'lower' if diff < -noise else 'tie'


def replicate(preset: Dict, out: Path, run: Callable) -> Path:
    """Run every arm for every seed (reusing finished stages) and write OUTPUT/report/replication.md +
    replication.png; the report is rewritten after each arm, so a run cut short still reports what finished.

    ``run(stage, recipe, options, done)`` is the pipeline's stage runner: it runs ``recipe`` (a recipe module)
    with ``options`` over the preset's shared ones, unless ``done`` and the stage's marker exist."""
    rep = preset['replication']
    anc_dir = out / 'ancestry'
    anc_ckpt = str(anc_dir / 'model')
    anc_args = preset['ancestry']['model_args']
    eval_opts = dict(preset.get('evaluate', {}), throughput=False)
    seeds = list(rep.get('seeds', [preset.get('seed', 0)]))
    zero_shot_seeds = set(rep.get('zero_shot_seeds', seeds))
    results: Dict[str, Dict[int, List[Dict]]] = {}  # arm -> seed -> rows
    compute: Dict[str, float] = {}
    spec = None
    report = None
    for seed in seeds:
        sd = out / f'seed{seed}'
        dist_dir = sd / 'distill'
        run(f'seed {seed} distill', distill, dict(preset['distill'], seed=seed, output=str(dist_dir),
                                                   teacher_checkpoint=anc_ckpt), dist_dir / 'pool' / 'model.safetensors')
        spec = read_pool_config(dist_dir / 'pool')['model_args']['pool']
        anc_macs = _vit_macs(anc_args['embed_dim'], anc_args['num_heads'], anc_args['depth'], spec)
        ancestry_cost = 3 * anc_macs * _images(anc_dir)

        def finetune_and_eval(arm: str, pool_args: Dict, init: str, pool_spec_of: Callable) -> Path:
            tags = (('zeroshot', 0), ('finetuned', None)) if seed in zero_shot_seeds else (('finetuned', None),)
            for tag, steps in tags:
                ft_dir = sd / f'{arm}_{tag}'
                opts = dict(preset['finetune'], **pool_args, seed=seed, output=str(ft_dir), stitch_init=init,
                            teacher_checkpoint=anc_ckpt)
                if steps is not None:
                    opts.update(max_steps=steps, epochs=0)  # max_steps 0 alone means 'use epochs'
                run(f'seed {seed} {arm} {tag} (finetune)', finetune, opts, ft_dir / 'pool' / 'model.safetensors')
                ev_dir = sd / f'eval_{arm}_{tag}'
                run(f'seed {seed} {arm} {tag} (evaluate)', evaluate,
                    dict(eval_opts, pool=str(ft_dir / 'pool'), seed=seed, output=str(ev_dir)),
                    ev_dir / 'descendants.csv')
                results.setdefault(f'{arm} {tag}', {})[seed] = _rows(ev_dir / 'descendants.csv')
            ft_dir = sd / f'{arm}_finetuned'
            ft_spec = pool_spec_of(ft_dir)
            mean_macs = sum(d.macs for d in enumerate_descendants(ft_spec)) / len(enumerate_descendants(ft_spec))
            return _images(ft_dir) * (anc_macs + 3 * mean_macs)

        def train(arm: str, name: str, options: Dict, width: int, heads: int, depth: int, kd: bool):
            s_dir = sd / name
            opts = dict(options, seed=seed, output=str(s_dir),
                        model_args=dict(anc_args, embed_dim=width, depth=depth, num_heads=heads))
            if kd:
                opts['teacher_checkpoint'] = anc_ckpt
            run(f'seed {seed} {arm} {width}w/{depth}', train_vit, opts, s_dir / 'model' / 'model.safetensors')
            macs = _vit_macs(width, heads, depth, spec)
            row = dict(name=f'{arm} {width}w', route=f'ViT {width}/{heads}h/{depth}',
                       params=_vit_params(width, heads, depth, spec), gmacs=round(macs / 1e9, 4),
                       top1=_last_top1(s_dir))
            cost = _images(s_dir) * ((anc_macs if kd else 0) + 3 * macs)
            return row, cost

        def pool_spec(ft_dir: Path):
            return read_pool_config(ft_dir / 'pool')['model_args']['pool']

        distill_cost = _images(dist_dir) * (anc_macs + 3 * sum(route_macs(spec, ((m.name, 0, spec.depth),))
                                                               for m in spec.members))
        def direct_and_scratch(arms):
            nonlocal report
            for arm, key, widths, kd in arms:
                rows, total = [], 0
                for width, heads in widths:
                    row, cost = train(arm, f'{arm}_{width}w', rep[key], width, heads, spec.depth, kd)
                    rows.append(row)
                    total += cost
                results.setdefault(arm, {})[seed] = rows
                compute[arm] = total + (ancestry_cost if kd else 0)
                report = _report(out, preset, spec, results, compute, ancestry_cost, run)

        # The order only decides what a run cut short has finished: the default init's pool and the direct
        # students it is measured against first, then the other inits, SN-Net and the members from scratch.
        inits = list(rep['stitch_inits'])
        for i, init in enumerate(inits):
            cost = finetune_and_eval(f'lgp_{init}', {'pool': str(dist_dir / 'pool')}, init, pool_spec)
            compute[f'lgp_{init} finetuned'] = ancestry_cost + distill_cost + cost
            report = _report(out, preset, spec, results, compute, ancestry_cost, run)
            if i == 0:
                direct_and_scratch([('direct', 'direct', rep['direct_widths'], True)])
        # SN-Net: anchors of the ancestry's depth; the widest is the ancestry, the others trained on labels
        anchors, anchor_cost = [], 0
        for width, heads in rep['anchor_widths']:
            _, cost = train(
                'snnet_anchor', f'snnet_anchor_{width}w', rep['anchor'], width, heads, anc_args['depth'], False)
            anchors.append(str(sd / f'snnet_anchor_{width}w' / 'model'))
            anchor_cost += cost
        anchors.append(anc_ckpt)
        cost = finetune_and_eval('snnet', {'anchors': anchors}, 'lstsq', pool_spec)
        compute['snnet finetuned'] = ancestry_cost + anchor_cost + cost
        report = _report(out, preset, spec, results, compute, ancestry_cost, run)
        direct_and_scratch([('scratch', 'scratch', [(m.width, m.heads) for m in spec.members], False)])
    return report


ARMS = {  # arm key -> label; the order of the tables
    'lgp_lstsq finetuned': 'LGP, lstsq init, finetuned',
    'lgp_learngene finetuned': 'LGP, learngene init, finetuned',
    'lgp_transpose finetuned': 'LGP, transpose init, finetuned',
    'snnet finetuned': "SN-Net (anchors at the ancestry's depth, lstsq), finetuned",
    'direct': 'direct logit-KD students',
    'scratch': "members' shapes from scratch",
    'lgp_lstsq zeroshot': 'LGP, lstsq init, zero-shot',
    'lgp_learngene zeroshot': 'LGP, learngene init, zero-shot',
    'lgp_transpose zeroshot': 'LGP, transpose init, zero-shot',
    'snnet zeroshot': 'SN-Net, zero-shot',
}


def _stitched_mean(rows: Sequence[Dict]) -> Optional[float]:
    vals = [r['top1'] for r in rows if '->' in str(r.get('route', ''))]
    return sum(vals) / len(vals) if vals else None


def claims(results: Dict[str, Dict[int, List[Dict]]], budgets: Sequence[float], lgp_stored: int,
           snnet_stored: Optional[int], test_images: Optional[int]) -> List[str]:
    """A plain verdict on each of the paper's claims, from the per-seed results."""
    lines = []
    lgp_key = next((k for k in ('lgp_lstsq finetuned', 'lgp_learngene finetuned') if k in results), None)
    lgp, snnet = results.get(lgp_key, {}), results.get('snnet finetuned', {})

    def at(arm, g):
        vals = [best_at(rows, g) for rows in arm.values()]
        return [v for v in vals if v is not None]

    if lgp and snnet:
        verdicts = []
        for g in budgets:
            a, b = at(lgp, g), at(snnet, g)
            if a and b:
                verdicts.append(f'<= {g:.3g} GMACs: {_fmt(a)} vs {_fmt(b)} ({compare(a, b, test_images)})')
        counts = {w: sum(f'({w})' in v for v in verdicts) for w in ('higher', 'tie', 'lower')}
        lines.append(f"- **LGP >= SN-Net at equal GMACs** ({ARMS[lgp_key]} vs SN-Net, best top-1 chosen on val): "
                     f"{'holds' if not counts['lower'] else 'does not hold'}: higher at {counts['higher']}, tied at "
                     f"{counts['tie']}, lower at {counts['lower']} of the {len(verdicts)} budgets both reach. "
                     + '; '.join(verdicts) + '.')
        small_l = min((r for rows in lgp.values() for r in rows), key=lambda r: r['gmacs'])
        small_s = min((r for rows in snnet.values() for r in rows), key=lambda r: r['gmacs'])
        lines.append(f"- **LGP builds smaller models**: {'holds' if small_l['gmacs'] < small_s['gmacs'] else 'does not hold'}"
                     f": its smallest descendant is {small_l['params'] / 1e6:.2f}M params / {small_l['gmacs']:.3g} "
                     f"GMACs ({_fmt(at(lgp, small_l['gmacs']))}% top-1), SN-Net's {small_s['params'] / 1e6:.2f}M / "
                     f"{small_s['gmacs']:.3g} GMACs ({_fmt(at(snnet, small_s['gmacs']))}%).")
    if snnet_stored:
        lines.append(f"- **LGP stores fewer parameters**: {'holds' if lgp_stored < snnet_stored else 'does not hold'}"
                     f": {lgp_stored / 1e6:.2f}M (pool) vs SN-Net's {snnet_stored / 1e6:.2f}M (anchors + stitch "
                     f"layers), {lgp_stored / snnet_stored:.2f}x.")
    a, b = results.get('lgp_learngene finetuned', {}), results.get('lgp_lstsq finetuned', {})
    common = sorted(set(a) & set(b))
    if common:
        ma = [_stitched_mean(a[s]) for s in common]
        mb = [_stitched_mean(b[s]) for s in common]
        diffs = [x - y for x, y in zip(ma, mb)]
        verdict = compare(ma, mb, test_images)
        lines.append(f"- **`learngene` init >= `lstsq` after the same finetune**: "
                     f"{'holds' if verdict != 'lower' else 'does not hold'} ({verdict}): mean top-1 of the stitched "
                     f"descendants {_fmt(ma)} vs {_fmt(mb)}; paired difference {_fmt(diffs)} over {len(common)} "
                     'seed(s).')
    direct = results.get('direct', {})
    if lgp and direct:
        parts, within, total = [], 0, 0
        widths = sorted({(r['gmacs'], r['name']) for rows in direct.values() for r in rows})
        for g, name in widths:
            d = [r['top1'] for rows in direct.values() for r in rows if r['name'] == name]
            a = at(lgp, g)
            if a:
                parts.append(f'{name} ({g:.3g} GMACs) {_fmt(d)} vs LGP {_fmt(a)} ({compare(a, d, test_images)})')
        # stretch goal: every stitched descendant within 1 point of a direct student of its GMACs (interpolated
        # between the direct students' sizes; descendants outside their range are not compared)
        pts = sorted((g, summarise([r['top1'] for rows in direct.values() for r in rows if r['name'] == n])['mean'])
                     for g, n in widths)
        names = sorted({r['name'] for rows in lgp.values() for r in rows if '->' in str(r['route'])})
        for n in names:
            rs = [r for rows in lgp.values() for r in rows if r['name'] == n]
            g, top = rs[0]['gmacs'], summarise([r['top1'] for r in rs])['mean']
            for (g0, t0), (g1, t1) in zip(pts, pts[1:]):
                if g0 <= g <= g1:
                    total += 1
                    within += top >= t0 + (t1 - t0) * (g - g0) / (g1 - g0) - 1.0
                    break
        lines.append('- **Stitched descendants vs direct distillation at equal GMACs** (LGP best within the '
                     "student's GMACs): " + '; '.join(parts) + f'. Stretch goal (every stitched descendant within 1 '
                     f'point of a direct logit-KD student of its GMACs, interpolated between the students): '
                     f"{within} of {total} compared descendants{' (met)' if total and within == total else ''}.")
    return lines


def stage_groups(timings: Dict[str, float]) -> Dict[str, float]:
    """Seconds per kind of stage, summed over the seeds: a stage named ``'seed 1 lgp_lstsq finetuned (finetune)'``
    counts towards ``'lgp_lstsq'``, ``'seed 0 direct 64w/6'`` towards ``'direct'``; ``'ancestry'`` stays itself."""
    groups: Dict[str, float] = {}
    for stage, seconds in timings.items():
        words = stage.split()
        key = words[2] if len(words) > 2 and words[0] == 'seed' else stage
        groups[key] = groups.get(key, 0.0) + seconds
    return groups


def _wall_time(out: Path, preset: Dict, timings: Dict[str, float], reused: Sequence[str]) -> List[str]:
    """The report's wall-time paragraph: the total, the bar (``replication.stage_minutes``), the precision the
    probe chose, and the time per kind of stage; nothing when no stage was timed."""
    if not timings:
        return []
    total = sum(timings.values())
    chosen = sorted({json.loads(f.read_text()).get('chosen') for f in out.glob('**/precision.json')} - {None})
    budget = preset['replication'].get('stage_minutes')
    bar = f" (bar: <= {budget} min on 2 cores with bf16: {'met' if total <= budget * 60 else 'not met'})" \
        if budget else ''
    groups = ', '.join(f'{k} {v / 60:.1f}' for k, v in stage_groups(timings).items())
    return [f'Wall time: {total / 60:.1f} min of stages{bar}, precision {", ".join(chosen) or "?"}; '
            f'per kind of stage, summed over the seeds (min): {groups}. '
            f'{len(reused)} of {len(timings)} stages were reused from an earlier run and count the time they '
            'took when they ran.', '']


def _report(out, preset, spec, results, compute, ancestry_cost, run=None) -> Path:
    rep_dir = out / 'report'
    rep_dir.mkdir(parents=True, exist_ok=True)
    test_images = TEST_IMAGES.get(preset.get('dataset')) if not preset.get('eval_limit') else preset['eval_limit']
    seed0 = min(next(iter(results.values())))
    plot = {ARMS[k]: v[seed0] for k, v in results.items() if not k.endswith('zeroshot') and seed0 in v}
    pareto_plot(plot, rep_dir / 'replication.png',
                title=f'{spec.name} on {preset.get("dataset")}: top-1 vs GMACs (seed {seed0})')

    lgp_stored = pool_params(spec)['pool']
    snnet_stored = None
    snnet_dirs = sorted(out.glob('seed*/snnet_finetuned/pool'))
    if snnet_dirs:
        snnet_stored = pool_params(read_pool_config(snnet_dirs[0])['model_args']['pool'])['pool']
    member_gmacs = {round(r['gmacs'], 4) for k in ('lgp_lstsq finetuned', 'snnet finetuned') if k in results
                    for rows in results[k].values() for r in rows if '->' not in str(r['route'])}
    direct_gmacs = {r['gmacs'] for rows in results.get('direct', {}).values() for r in rows}
    budgets = sorted(member_gmacs | direct_gmacs)
    seeds_done = {k: sorted(v) for k, v in results.items()}

    lines = [f'# Replication: Learngene Pool vs SN-Net vs direct distillation ({preset.get("dataset")})', '',
             f'Command: `make demo PRESET=replication`. Pool `{spec.name}`: '
             + ', '.join(f'{m.label} {m.width} wide/{m.heads} heads' for m in spec.members)
             + f', {spec.img_size} px, patch {spec.patch_size}. One ancestry '
             f"({preset['ancestry']['model_args'].get('embed_dim')} wide, "
             f"{preset['ancestry']['model_args'].get('depth')} blocks, test top-1 {_last_top1(out / 'ancestry'):.2f}, "
             f'{ancestry_cost / 1e12:.1f} TMACs to train) shared by every arm and seed. Seeds per arm: '
             + ', '.join(f'{ARMS[k]} {v}' for k, v in seeds_done.items()) + '. Top-1 on the test set '
             f'({test_images or "all"} images), mean +- sd over the seeds; every choice (the best descendant within '
             f'a budget) made on the {preset.get("val_size", 0)}-image validation split.', '',
             '## Claims', '', *claims(results, budgets, lgp_stored, snnet_stored, test_images), '',
             'A difference counts when it exceeds twice the combined standard error (the seeds\' spread, never less '
             'than the test set\'s binomial error); otherwise it is a tie.', '',
             f'![top-1 vs GMACs](replication.png)', '',
             *_wall_time(out, preset, getattr(run, 'timings', {}), getattr(run, 'reused', ())),
             '## Best top-1 within a GMACs budget', '']
    head = ['method', 'seeds', 'stored params', 'smallest (params / GMACs)', 'largest (params / GMACs)'] + \
        [f'<= {g:.3g} GMACs' for g in budgets] + ['mean top-1 of stitched descendants', 'training compute (TMACs)']
    table = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for key, label in ARMS.items():
        if key not in results:
            continue
        per_seed = results[key]
        rows0 = next(iter(per_seed.values()))
        small, large = min(rows0, key=lambda r: r['gmacs']), max(rows0, key=lambda r: r['gmacs'])
        stored = snnet_stored if key.startswith('snnet') else lgp_stored if key.startswith('lgp') else \
            sum(r['params'] for r in rows0)
        cells = [label, str(len(per_seed)), f'{stored / 1e6:.2f}M' if stored else '',
                 f"{small['params'] / 1e6:.2f}M / {small['gmacs']:.3g}",
                 f"{large['params'] / 1e6:.2f}M / {large['gmacs']:.3g}"]
        for g in budgets:
            cells.append(_fmt([v for v in (best_at(rows, g) for rows in per_seed.values()) if v is not None]))
        cells.append(_fmt([m for m in (_stitched_mean(rows) for rows in per_seed.values()) if m is not None]))
        cells.append(f'{compute[key] / 1e12:.1f}' if key in compute else '')
        table.append('| ' + ' | '.join(cells) + ' |')
    lines += table + ['',
                      f'Training compute includes the ancestry ({ancestry_cost / 1e12:.1f} TMACs) for every arm that '
                      'uses it (LGP: distillation and KD; SN-Net: its widest anchor and its finetune\'s KD teacher; '
                      'direct students: KD); the members from scratch do not use it. A trained model costs 3x forward '
                      'MACs per image, a frozen teacher 1x; zero-shot rows add no training. The LGP and SN-Net '
                      'compute is that of one pool, which gives every descendant.', '', '## Pareto fronts (seed '
                      f'{seed0}, test top-1)', '']
    for label, rows in plot.items():
        front = pareto_front([r for r in rows if r.get('top1') is not None])
        lines.append(f"- {label}: " + ', '.join(f"{r['name']} {r['gmacs']:.3g}G {r['top1']:.2f}%" for r in front))
    lines += ['', f'## Every model (seed {seed0})', '']
    for key, per_seed in results.items():
        if seed0 in per_seed:
            lines.append(write_markdown(per_seed[seed0], title=ARMS[key]))
    lines += ['## Settings', '', '```yaml', yaml.safe_dump(preset, sort_keys=False).strip(), '```', '']
    path = rep_dir / 'replication.md'
    path.write_text('\n'.join(lines))
    return path
