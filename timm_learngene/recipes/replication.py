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
   and labels on that same budget. With ``direct_lrs`` (a list of learning rates) each width is trained with every
   one of them at ``direct_lr_seed`` (default: the first seed) and the one with the best validation top-1
   (:func:`student_val_top1`) is used at every seed, as the pool's finetune lr was chosen on one seed's validation
   split (only the chosen run counts in the compute).
5. With ``nested`` (a ``train_nested`` section with its ``sizes``), a nested pool: width slices of one ViT at the
   members' depth, its widest size's shape, trained with the sandwich rule and logit KD
   (:mod:`timm_learngene.recipes.train_nested`); each size chosen on val like a descendant.

Every choice is made on the validation split: the best descendant within a GMACs budget is the one with the best
``val_top1``; its test top-1 is reported (mean +- sd over the seeds). Single-model arms (scratch, direct) have
no choice to make: within a budget their largest model counts.

Training compute is counted in multiply-adds (:func:`stage_images`, :func:`distill_macs_per_image`,
:func:`finetune_macs_per_image`): a trained model costs 3x its forward MACs per image (forward + backward), a frozen
teacher 1x; images = optimizer steps x batch size x gradient accumulation x processes. Distillation trains every
member and its feature transforms on each image; joint finetuning trains ``routes_per_step`` routes on each image
(the sandwich rule's smallest and largest member plus uniform draws from the other routes: their expected MACs).
Evaluation passes during training are not counted.

Comparisons (:func:`compare`): two arms are compared on the seeds both ran (the seeds are shared: paired). A
difference counts when the mean of the per-seed differences exceeds twice the larger of (a) the standard error of
those differences over the seeds and (b) the binomial standard error of the difference of two evaluations on the
test set, ``sqrt(pa (100 - pa) / N + pb (100 - pb) / N)`` points. (b) is not divided by the number of seeds: every
seed evaluates on the same N test images, so averaging seeds does not average that error away.
"""
import contextlib
import csv
import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import yaml

from ..ancestry import load_ancestry
from ..data import build_dataset, build_loader
from ..errors import ConfigError
from ..evaluation import pareto_front, pareto_plot, write_markdown
from ..finetune import cost_buckets, sandwich_routes
from ..pool_reader import read_pool_config
from ..spec import MemberSpec, PoolSpec, enumerate_descendants, pool_params, route_macs
from ..nested import every_step, parse_sizes, size_cost
from . import distill, evaluate, finetune, train_nested, train_vit

__all__ = ['replicate', 'summarise', 'best_at', 'chosen_at', 'compare', 'goal', 'screen', 'stage_images', 'distill_macs_per_image',
           'finetune_macs_per_image']

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


def stage_images(stage_dir: Path) -> int:
    """Images a training stage consumed: its last logged optimizer step x batch size x gradient accumulation x the
    number of processes it ran on (``launch.json``; 1 when the stage did not record it)."""
    cfg = yaml.safe_load((stage_dir / 'config.yaml').read_text())
    launch = stage_dir / 'launch.json'
    processes = json.loads(launch.read_text()).get('num_processes', 1) if launch.exists() else 1
    return _steps(stage_dir) * cfg['batch_size'] * cfg.get('grad_accum', 1) * processes


def distill_macs_per_image(spec: PoolSpec, teacher_macs: int) -> int:
    """Training MACs of one distillation image: the ancestry's forward, then forward + backward (3x) of every member
    alone and of its feature transforms (one ``Linear(member width -> teacher width)`` per matched position and kind,
    applied to every token)."""
    members = sum(route_macs(spec, ((m.name, 0, spec.depth),)) for m in spec.members)
    transforms = 0
    if spec.distill is not None:
        positions = 2 * len(spec.distill.member_blocks)  # block output and attention output
        transforms = sum(positions * spec.num_tokens * m.width * spec.distill.teacher_width for m in spec.members)
    return teacher_macs + 3 * (members + transforms)


def finetune_macs_per_image(spec: PoolSpec, cfg: Dict, teacher_macs: int) -> float:
    """Expected training MACs of one finetuning image under the stage's config ``cfg``: the ancestry's forward when
    KD is on, plus 3x the forward MACs of the step's ``routes_per_step`` routes. With ``train: all`` and at least 3
    routes a step, the smallest and largest member are in every step (the sandwich rule) and the rest are drawn
    uniformly without replacement from the other routes; otherwise every route is drawn uniformly (``train:
    stitches`` draws only stitched routes). With ``route_sampling: macs`` each cost bucket gives one route (its mean
    counted); the draws that fill in for empty buckets are counted at the other routes' mean (a close bound, not
    exact: they exclude the routes already drawn)."""
    train_all = cfg.get('train', 'all') == 'all'
    routes = [d for d in enumerate_descendants(spec) if train_all or len(d.route) > 1]
    k = int(cfg.get('routes_per_step', 1))
    always = sandwich_routes(spec, cfg.get('sandwich', 'ends')) if train_all and k >= 3 else []  # as finetune does
    others = [d.macs for d in routes if d.route not in always]
    drawn = k - len(always)
    expected = sum(route_macs(spec, r) for r in always)
    if others and cfg.get('route_sampling', 'uniform') == 'macs':
        buckets = cost_buckets(others, drawn)
        expected += sum(sum(others[i] for i in b) / len(b) for b in buckets)
        drawn -= len(buckets)
    expected += drawn * sum(others) / len(others) if others else 0
    return (teacher_macs if cfg.get('kd_weight', 0.5) else 0) + 3 * expected  # KD: one ancestry forward


def nested_macs_per_image(cfg: Dict, teacher_macs: int) -> float:
    """Training MACs per image of a nested ViT (``train_nested``'s config ``cfg``): the ancestry's forward once (with
    KD) plus 3x the forward MACs of each step's sizes (the widest and the ``narrowest_every_step`` narrowest, and
    the expected MACs of the uniform draws from the others)."""
    args = cfg['model_args']
    sizes = parse_sizes(cfg['sizes'])
    macs = [size_cost(w, h, args['depth'], args.get('img_size', 224), args.get('patch_size', 16),
                      args.get('in_chans', 3), args.get('num_classes', 1000))[1] for w, h in sizes]
    always_idx = every_step(len(macs), cfg.get('narrowest_every_step', 1))
    always = [macs[i] for i in always_idx]
    others = [m for i, m in enumerate(macs) if i not in always_idx]
    drawn = min(cfg.get('sizes_per_step', 4), len(macs)) - len(always)
    mean_other = sum(others) / len(others) if others else 0
    return (teacher_macs if cfg.get('kd_weight') else 0) + 3 * (sum(always) + drawn * mean_other)


def _distill_cost(distill_dir: Path, spec: PoolSpec, teacher_macs: int) -> float:
    return stage_images(distill_dir) * distill_macs_per_image(spec, teacher_macs)


def _finetune_cost(finetune_dir: Path, spec: PoolSpec, teacher_macs: int) -> float:
    cfg = yaml.safe_load((finetune_dir / 'config.yaml').read_text())
    return stage_images(finetune_dir) * finetune_macs_per_image(spec, cfg, teacher_macs)


def _student(s_dir: Path, arm: str, spec: PoolSpec, teacher_macs: int, kd: bool) -> Dict:
    """The report row of a single-model stage (a direct student, a model from scratch), with its training cost
    (``cost``; the ancestry's forward counted when ``kd``)."""
    args = yaml.safe_load((s_dir / 'config.yaml').read_text())['model_args']
    w, h, d = args['embed_dim'], args['num_heads'], args['depth']
    macs = _vit_macs(w, h, d, spec)
    return dict(name=f'{arm} {w}w', route=f'ViT {w}/{h}h/{d}', params=_vit_params(w, h, d, spec),
                gmacs=round(macs / 1e9, 4), top1=_last_top1(s_dir),
                cost=stage_images(s_dir) * ((teacher_macs if kd else 0) + 3 * macs))


def direct_stage(width: int, lr: float, base_lr: float) -> str:
    """The folder of a direct student: ``direct_64w`` at the ``direct`` section's lr, ``direct_64w_lr0.002``
    at another one of ``direct_lrs``."""
    return f'direct_{width}w' if lr == base_lr else f'direct_{width}w_lr{lr:g}'


def student_val_top1(s_dir: Path) -> float:
    """Top-1 (percent) of the model a ``train_vit`` stage wrote (``s_dir/model``) on the validation split its
    config held out of the training images (``val_size``, ``val_seed``), in fp32. Measured once and cached in
    ``s_dir/val_top1.json`` with the size and mtime of the weights it measured (measured again when they change)."""
    cfg = yaml.safe_load((s_dir / 'config.yaml').read_text())
    if not cfg.get('val_size'):
        raise ConfigError(f'{s_dir}: trained without a validation split (val_size 0), so nothing can be chosen on '
                          'its validation top-1; set val_size in the preset and train it again')
    weights = s_dir / 'model' / 'model.safetensors'
    stamp = [weights.stat().st_size, weights.stat().st_mtime_ns]
    cache = s_dir / 'val_top1.json'
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get('weights') == stamp:
            return cached['val_top1']
    model = load_ancestry(cfg['model'], str(s_dir / 'model'))
    shape = dict(img_size=model.patch_embed.img_size[0], in_chans=model.patch_embed.proj.in_channels,
                 num_classes=model.num_classes)
    loader = build_loader(build_dataset(cfg, 'val', **shape), cfg.get('eval_batch_size') or 256, False)
    hits = seen = 0
    with torch.no_grad():
        for x, y in loader:
            hits += (model(x).argmax(-1) == y).sum().item()
            seen += y.numel()
    top1 = 100.0 * hits / seen
    cache.write_text(json.dumps({'val_top1': top1, 'weights': stamp}))
    return top1


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


def chosen_at(rows: Sequence[Dict], gmacs: float) -> Optional[Dict]:
    """The row of the model chosen within ``gmacs``: the best ``val_top1`` when every candidate has one, else the
    largest model (single-model arms); None when nothing fits."""
    fits = [r for r in rows if r['gmacs'] <= gmacs * 1.0001 and r.get('top1') is not None]
    if not fits:
        return None
    if all(r.get('val_top1') is not None for r in fits):
        return max(fits, key=lambda r: (r['val_top1'], -r['gmacs']))
    return max(fits, key=lambda r: r['gmacs'])


def best_at(rows: Sequence[Dict], gmacs: float) -> Optional[float]:
    """Test top-1 of the model chosen within ``gmacs`` (:func:`chosen_at`); None when nothing fits."""
    row = chosen_at(rows, gmacs)
    return None if row is None else row['top1']


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


def compare(a: Sequence[float], b: Sequence[float], test_images: Optional[int]) -> str:
    """'higher' / 'lower' / 'tie' for arm ``a`` against arm ``b``, paired by seed (``a[i]`` and ``b[i]`` come from the
    same seed; see the module docstring for the rule): the mean per-seed difference counts when it exceeds twice the
    larger of its standard error over the seeds and the binomial error of a difference of two evaluations on
    ``test_images`` images (none when ``test_images`` is None)."""
    if len(a) != len(b) or not a:
        raise ValueError(f'compare pairs values by seed: got {len(a)} and {len(b)} values')
    diffs = [x - y for x, y in zip(a, b)]
    d = summarise(diffs)
    spread = d['sd'] / math.sqrt(d['n']) if d['n'] > 1 else 0.0
    pa, pb = summarise(a)['mean'], summarise(b)['mean']
    binom = math.sqrt((pa * (100 - pa) + pb * (100 - pb)) / test_images) if test_images else 0.0
    noise = 2 * max(spread, binom)
    return 'higher' if d['mean'] > noise else 'lower' if d['mean'] < -noise else 'tie'


def _paired(a: Dict[int, float], b: Dict[int, float]):
    """The values of two arms on the seeds both have (None values dropped), in seed order."""
    seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None)
    return [a[s] for s in seeds], [b[s] for s in seeds]


def replicate(preset: Dict, out: Path, run: Callable) -> Path:
    """Run every arm for every seed (reusing finished stages) and write OUTPUT/report/replication.md +
    replication.png; the report is rewritten after each arm that ran a stage, so a run cut short still reports
    what finished (arms read back from reused stages are written once, at the end).

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
    # the direct students' learning rate, per width: the best on the validation split at `direct_lr_seed` of
    # `direct_lrs` (default: `direct`'s lr alone; a tie keeps `direct`'s)
    base_lr, lrs = _direct_lrs(preset)
    lr_seed = direct_lr_seed(preset)
    lr_choices: Dict[int, Dict[float, float]] = {}  # width -> lr -> val top-1 at lr_seed
    spec = None
    report = None
    pending = False  # arms finished or read back since the report was last written
    reported_after = None  # how many stages had run (not reused) when it was last written

    def update_report():
        # after each arm when a stage ran since the last report (a run cut short reports what finished); arms whose
        # stages were all reused (a resumed run, --report-only) are written once, at the end
        nonlocal report, pending, reported_after
        ran = len(getattr(run, 'timings', ())) - len(getattr(run, 'reused', ()))
        if report is not None and ran == reported_after:
            pending = True
            return
        report = _report(out, preset, spec, results, compute, ancestry_cost, run, lr_choices)
        pending, reported_after = False, ran

    try:
        for seed in seeds:
            sd = out / f'seed{seed}'
            dist_dir = sd / 'distill'
            try:
                run(f'seed {seed} distill', distill, dict(preset['distill'], seed=seed, output=str(dist_dir),
                                                           teacher_checkpoint=anc_ckpt),
                    dist_dir / 'pool' / 'model.safetensors')
            except StageNotDone:  # --report-only: nothing of this seed can have finished
                continue
            spec = read_pool_config(dist_dir / 'pool')['model_args']['pool']
            anc_macs = _vit_macs(anc_args['embed_dim'], anc_args['num_heads'], anc_args['depth'], spec)
            ancestry_cost = 3 * anc_macs * stage_images(anc_dir)

            def finetune_and_eval(arm: str, pool_args: Dict, init: str, pool_spec_of: Callable,
                                  zero_shot: bool = True) -> Path:
                # the zero-shot rows (stitch init, no finetuning) belong to the paper's claims: not for the candidates
                zero_shot = zero_shot and seed in zero_shot_seeds
                tags = (('zeroshot', 0), ('finetuned', None)) if zero_shot else (('finetuned', None),)
                for tag, steps in tags:
                    ft_dir = sd / f'{arm}_{tag}'
                    opts = dict(preset['finetune'], **pool_args, seed=seed, output=str(ft_dir), stitch_init=init,
                                teacher_checkpoint=anc_ckpt)
                    if steps is not None:
                        opts.update(max_steps=steps, epochs=0)  # max_steps 0 alone means 'use epochs'
                    ev_dir = sd / f'eval_{arm}_{tag}'
                    try:
                        run(f'seed {seed} {arm} {tag} (finetune)', finetune, opts,
                            ft_dir / 'pool' / 'model.safetensors')
                        run(f'seed {seed} {arm} {tag} (evaluate)', evaluate,
                            dict(eval_opts, pool=str(ft_dir / 'pool'), seed=seed, output=str(ev_dir)),
                            ev_dir / 'descendants.csv')
                    except StageNotDone:
                        if tag == 'finetuned':
                            raise
                        continue  # --report-only: an unfinished zero-shot row does not hide the finetuned one
                    results.setdefault(f'{arm} {tag}', {})[seed] = _rows(ev_dir / 'descendants.csv')
                ft_dir = sd / f'{arm}_finetuned'
                return _finetune_cost(ft_dir, pool_spec_of(ft_dir), anc_macs)

            def train(arm: str, name: str, options: Dict, width: int, heads: int, depth: int, kd: bool,
                      at_seed: Optional[int] = None, tag: str = ''):
                at_seed = seed if at_seed is None else at_seed
                s_dir = out / f'seed{at_seed}' / name
                opts = dict(options, seed=at_seed, output=str(s_dir),
                            model_args=dict(anc_args, embed_dim=width, depth=depth, num_heads=heads))
                if kd:
                    opts['teacher_checkpoint'] = anc_ckpt
                run(f'seed {at_seed} {arm} {width}w/{depth}{tag}', train_vit, opts,
                    s_dir / 'model' / 'model.safetensors')
                row = _student(s_dir, arm, spec, anc_macs, kd)
                return row, row.pop('cost')

            def direct_lr(width: int, heads: int) -> float:
                # the students' lr at this width: the one in `direct`, or the best on val of `direct_lrs` at lr_seed
                # (trained there first), as the pool's finetune lr was chosen on one seed's validation split
                if len(lrs) == 1:
                    return lrs[0]
                for lr in lrs:
                    train('direct', direct_stage(width, lr, base_lr), dict(rep['direct'], lr=lr), width, heads,
                          spec.depth, True, at_seed=lr_seed, tag=f' lr {lr:g}' if lr != base_lr else '')
                vals = {lr: student_val_top1(out / f'seed{lr_seed}' / direct_stage(width, lr, base_lr)) for lr in lrs}
                lr_choices.setdefault(width, vals)
                return max(lrs, key=lambda lr: (vals[lr], lr == base_lr))

            def pool_spec(ft_dir: Path):
                return read_pool_config(ft_dir / 'pool')['model_args']['pool']

            distill_cost = _distill_cost(dist_dir, spec, anc_macs)

            def direct_and_scratch(arms):
                for arm, key, widths, kd in arms:
                    with _unless_unfinished():  # --report-only: an arm is reported with every width or not at all
                        rows, total = [], 0
                        for width, heads in widths:
                            if arm == 'direct':
                                lr = direct_lr(width, heads)
                                row, cost = train(arm, direct_stage(width, lr, base_lr), dict(rep[key], lr=lr), width,
                                                  heads, spec.depth, kd, tag=f' lr {lr:g}' if lr != base_lr else '')
                                row['lr'] = lr
                            else:
                                row, cost = train(arm, f'{arm}_{width}w', rep[key], width, heads, spec.depth, kd)
                            rows.append(row)
                            total += cost
                        results.setdefault(arm, {})[seed] = rows
                        compute[arm] = total + (ancestry_cost if kd else 0)
                        update_report()

            # The order only decides what a run cut short has finished: the default init's pool and the direct
            # students it is measured against first, then the other inits, SN-Net and the members from scratch.
            inits = list(rep['stitch_inits'])
            for i, init in enumerate(inits):
                with _unless_unfinished():
                    cost = finetune_and_eval(f'lgp_{init}', {'pool': str(dist_dir / 'pool')}, init, pool_spec)
                    compute[f'lgp_{init} finetuned'] = ancestry_cost + distill_cost + cost
                    update_report()
                if i == 0:
                    direct_and_scratch([('direct', 'direct', rep['direct_widths'], True)])
            # candidate designs (issue 28): a pool distilled and finetuned as the LGP arm, with the candidate's
            # overrides
            distill_dirs = candidate_distill_dirs(rep.get('candidates', []))
            for cand in rep.get('candidates', []):
                name = cand['name']
                c_dir = sd / distill_dirs[name]
                with _unless_unfinished():
                    # candidates sharing a distilled pool share its stage name: its time counts once, for the first
                    run(f"seed {seed} {distill_dirs[name][:-len('_distill')]} distill", distill,
                        dict(preset['distill'], **cand.get('distill', {}), seed=seed, output=str(c_dir),
                             teacher_checkpoint=anc_ckpt), c_dir / 'pool' / 'model.safetensors')
                    c_spec = read_pool_config(c_dir / 'pool')['model_args']['pool']
                    ft = dict(cand.get('finetune', {}))
                    init = ft.pop('stitch_init', preset['finetune'].get('stitch_init', 'lstsq'))
                    cost = finetune_and_eval(name, dict(ft, pool=str(c_dir / 'pool')), init, pool_spec, zero_shot=False)
                    compute[f'{name} finetuned'] = ancestry_cost + _distill_cost(c_dir, c_spec, anc_macs) + cost
                    update_report()
            # the nested pool (issue 28): width slices of one ViT at the members' depth, the widest size's shape
            if rep.get('nested'):
                with _unless_unfinished():
                    n_dir = sd / 'nested'
                    (w, h) = parse_sizes(rep['nested']['sizes'])[-1]
                    opts = dict(rep['nested'], seed=seed, output=str(n_dir), teacher_checkpoint=anc_ckpt,
                                model_args=dict(anc_args, embed_dim=w, num_heads=h, depth=spec.depth))
                    run(f'seed {seed} nested', train_nested, opts, n_dir / 'sizes.csv')
                    results.setdefault('nested finetuned', {})[seed] = _rows(n_dir / 'sizes.csv')
                    compute['nested finetuned'] = ancestry_cost + stage_images(n_dir) * nested_macs_per_image(
                        yaml.safe_load((n_dir / 'config.yaml').read_text()), anc_macs)
                    update_report()
            # SN-Net: anchors of the ancestry's depth; the widest is the ancestry, the others trained on labels
            with _unless_unfinished():
                anchors, anchor_cost = [], 0
                for width, heads in rep['anchor_widths']:
                    _, cost = train(
                        'snnet_anchor', f'snnet_anchor_{width}w', rep['anchor'], width, heads, anc_args['depth'], False)
                    anchors.append(str(sd / f'snnet_anchor_{width}w' / 'model'))
                    anchor_cost += cost
                anchors.append(anc_ckpt)
                cost = finetune_and_eval('snnet', {'anchors': anchors}, 'lstsq', pool_spec)
                compute['snnet finetuned'] = ancestry_cost + anchor_cost + cost
                update_report()
            direct_and_scratch([('scratch', 'scratch', [(m.width, m.heads) for m in spec.members], False)])
    finally:
        if pending:  # also when --until or an error stops the run
            report = _report(out, preset, spec, results, compute, ancestry_cost, run, lr_choices)
    if report is None:
        raise ConfigError(f'{out}: no arm of the replication has finished for seeds {seeds}, so there is nothing to '
                          f'report; run it without --report-only first')
    return report


def direct_lr_seed(preset: Dict) -> int:
    """The seed whose validation split chooses the direct students' lr: ``replication.direct_lr_seed``, default the
    first of ``replication.seeds`` (default: the preset's seed)."""
    rep = preset['replication']
    return rep.get('direct_lr_seed', list(rep.get('seeds', [preset.get('seed', 0)]))[0])


def _direct_lrs(preset: Dict):
    """``(the direct section's lr, the lrs to choose from)``; ConfigError for a choice that cannot be made."""
    rep = preset['replication']
    base_lr = float(rep['direct']['lr'])
    try:
        lrs = [float(x) for x in rep.get('direct_lrs') or [base_lr]]
    except (TypeError, ValueError):
        raise ConfigError(f"replication: direct_lrs is a list of learning rates, e.g. [0.001, 0.002]; got "
                          f"{rep.get('direct_lrs')!r}") from None
    if len(lrs) > 1 and not preset.get('val_size'):
        raise ConfigError("replication: direct_lrs chooses the students' learning rate on the validation split, "
                          'but val_size is 0; set val_size (e.g. 5000) or give one learning rate')
    if len(set(lrs)) != len(lrs) or min(lrs) <= 0:
        raise ConfigError(f'replication: direct_lrs needs distinct positive learning rates, got {lrs}')
    return base_lr, lrs


def check_preset(preset: Dict) -> None:
    """The replication section's own settings, checked before the pipeline trains anything (ConfigError)."""
    if 'replication' in preset:
        _direct_lrs(preset)


class StageNotDone(Exception):
    """Raised by the pipeline's stage runner under ``--report-only`` for a stage that has not finished: the arm it
    belongs to is left out of the report (for that seed) instead of being trained."""


@contextlib.contextmanager
def _unless_unfinished():
    """Skips the rest of an arm's block when one of its stages has not finished (``--report-only``)."""
    try:
        yield
    except StageNotDone:
        pass


def candidate_distill_dirs(candidates: Sequence[Dict]) -> Dict[str, str]:
    """Each candidate's distill stage folder (in its seed's folder): ``NAME_distill``, or the folder of the first
    earlier candidate with the same distill overrides, whose pool it then finetunes (the same stage: one spec, seed,
    init and step count) instead of distilling an identical one again. Its compute is still counted in full."""
    first: Dict[str, str] = {}
    dirs = {}
    for cand in candidates:
        key = json.dumps(cand.get('distill', {}), sort_keys=True)
        dirs[cand['name']] = first.setdefault(key, f"{cand['name']}_distill")
    return dirs


ARMS = {  # arm key -> label; the order of the tables
    'lgp_lstsq finetuned': 'LGP, lstsq init, finetuned',
    'lgp_learngene finetuned': 'LGP, learngene init, finetuned',
    'lgp_transpose finetuned': 'LGP, transpose init, finetuned',
    'snnet finetuned': "SN-Net (anchors at the ancestry's depth, lstsq), finetuned",
    'nested finetuned': 'nested pool (width slices of one ViT)',
    'direct': 'direct logit-KD students',
    'scratch': "members' shapes from scratch",
    'lgp_lstsq zeroshot': 'LGP, lstsq init, zero-shot',
    'lgp_learngene zeroshot': 'LGP, learngene init, zero-shot',
    'lgp_transpose zeroshot': 'LGP, transpose init, zero-shot',
    'snnet zeroshot': 'SN-Net, zero-shot',
}


def _label(key: str) -> str:
    """The table label of an arm: :data:`ARMS`'s, or a candidate design's own name (``replication.candidates``)."""
    if key in ARMS:
        return ARMS[key]
    name, _, tag = key.rpartition(' ')
    return f'candidate {name}, {tag}'


def _stitched_mean(rows: Sequence[Dict], key: str = 'top1') -> Optional[float]:
    vals = [r[key] for r in rows if '->' in str(r.get('route', ''))]
    return sum(vals) / len(vals) if vals else None


def _at(arm: Dict[int, List[Dict]], gmacs: float) -> Dict[int, Optional[float]]:
    """Per seed: the test top-1 of the model chosen within ``gmacs`` (:func:`best_at`)."""
    return {seed: best_at(rows, gmacs) for seed, rows in arm.items()}


def _by_name(arm: Dict[int, List[Dict]], name: str) -> Dict[int, float]:
    return {seed: r['top1'] for seed, rows in arm.items() for r in rows if r['name'] == name}


def claims(results: Dict[str, Dict[int, List[Dict]]], budgets: Sequence[float], lgp_stored: int,
           snnet_stored: Optional[int], test_images: Optional[int]) -> List[str]:
    """A plain verdict on each of the paper's claims, from the per-seed results (arms compared on the seeds both
    ran, paired)."""
    lines = []
    lgp_key = next((k for k in ('lgp_lstsq finetuned', 'lgp_learngene finetuned') if k in results), None)
    lgp, snnet = results.get(lgp_key, {}), results.get('snnet finetuned', {})

    def vals(arm, g):
        return [v for v in _at(arm, g).values() if v is not None]

    if lgp and snnet:
        verdicts = []
        for g in budgets:
            a, b = _paired(_at(lgp, g), _at(snnet, g))
            if a:
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
                     f"GMACs ({_fmt(vals(lgp, small_l['gmacs']))}% top-1), SN-Net's {small_s['params'] / 1e6:.2f}M / "
                     f"{small_s['gmacs']:.3g} GMACs ({_fmt(vals(snnet, small_s['gmacs']))}%).")
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
        parts = []
        students = sorted({(r['gmacs'], r['name']) for rows in direct.values() for r in rows})
        for g, name in students:
            a, d = _paired(_at(lgp, g), _by_name(direct, name))
            if a:
                parts.append(f'{name} ({g:.3g} GMACs) {_fmt(d)} vs LGP {_fmt(a)} ({compare(a, d, test_images)})')
        lines.append('- **Best descendant vs direct distillation at equal GMACs** (the LGP descendant chosen on val '
                     "within each student's GMACs, a member or a stitched one): " + '; '.join(parts) + '. '
                     + _stretch(lgp, direct, students))
    return lines


def _interpolated(pts: Sequence, g: float) -> Optional[float]:
    """Linear interpolation of ``(gmacs, top1)`` points (sorted by gmacs) at ``g``; None outside their range."""
    for (g0, t0), (g1, t1) in zip(pts, pts[1:]):
        if g0 <= g <= g1:
            return t0 + (t1 - t0) * (g - g0) / (g1 - g0) if g1 > g0 else max(t0, t1)
    return pts[0][1] if len(pts) == 1 and g == pts[0][0] else None


def _stretch(lgp: Dict[int, List[Dict]], direct: Dict[int, List[Dict]], students: Sequence) -> str:
    """Issue 12's stretch goal: every stitched descendant (seed means) within 1 point of the direct students' top-1
    interpolated at its GMACs; descendants outside the students' GMACs range are counted and not compared."""
    pts = [(g, summarise(list(_by_name(direct, n).values()))['mean']) for g, n in students]
    names = sorted({r['name'] for rows in lgp.values() for r in rows if '->' in str(r['route'])})
    within = compared = 0
    for n in names:
        rs = [r for rows in lgp.values() for r in rows if r['name'] == n]
        ref = _interpolated(pts, rs[0]['gmacs'])
        if ref is not None:
            compared += 1
            within += summarise([r['top1'] for r in rs])['mean'] >= ref - 1.0
    outside = len(names) - compared
    return (f'Stretch goal (every stitched descendant within 1 point of the direct students interpolated at its '
            f"GMACs): {within} of {compared} compared{' (met)' if compared and within == compared else ''}"
            + (f', {outside} of the {len(names)} stitched descendants outside the students\' GMACs range' if outside
               else f', all {len(names)} stitched descendants compared') + '.')


def goal(results: Dict[str, Dict[int, List[Dict]]], compute: Dict[str, float], margin: float = 0.3,
         label: Callable[[str], str] = None) -> List[str]:
    """Issue 28's goal for every finetuned pool arm, each part met or not: (1) at each direct student's GMACs the
    descendant chosen on val within that budget is at least the student minus ``margin`` points (seed means; stretch:
    at least the student); (2) the pool's training compute is at most the direct students' (both include the
    shared ancestry once); (3) the Pareto front chosen on val (seed-mean val top-1) rises on test with at least 10
    distinct sizes, starting at the smallest descendant (it ends, by construction, at the best on val: descendants
    past the largest member's GMACs are rarely on it). ``label(key)`` names an arm (default :func:`_label`)."""
    label = label or _label
    direct = results.get('direct', {})
    lines = []
    for key, arm in results.items():
        if not key.endswith('finetuned') or not direct:
            continue
        parts, met, stretch = [], True, True
        for g, name in sorted({(r['gmacs'], r['name']) for rows in direct.values() for r in rows}):
            a, d = _paired(_at(arm, g), _by_name(direct, name))
            if not a:
                continue
            gap = summarise(a)['mean'] - summarise(d)['mean']
            met &= gap >= -margin
            stretch &= gap >= 0
            parts.append(f'{name} {gap:+.2f}')
        cost = ''
        if key in compute and 'direct' in compute:
            ratio = compute[key] / compute['direct']
            cost = (f"; compute {compute[key] / 1e12:.1f} vs the students' {compute['direct'] / 1e12:.1f} TMACs "
                    f"({ratio:.2f}x): {'met' if ratio <= 1 else 'not met'}")
        names = {}
        for rows in arm.values():
            for r in rows:
                names.setdefault(r['name'], []).append(r)
        means = [dict(name=n, gmacs=rs[0]['gmacs'], top1=summarise([r['top1'] for r in rs])['mean'],
                      val_top1=summarise([r['val_top1'] for r in rs])['mean'])
                 for n, rs in names.items() if all(r.get('val_top1') is not None for r in rs)]
        pareto = ''
        if means:
            front = pareto_front(means, y='val_top1')
            rises = all(b['top1'] > a['top1'] for a, b in zip(front, front[1:]))
            sizes = len({r['gmacs'] for r in front})
            starts = front[0]['gmacs'] == min(r['gmacs'] for r in means)
            ok = rises and sizes >= 10 and starts
            pareto = (f"; Pareto front (val-chosen) {sizes} sizes from "
                      f"{'the smallest' if starts else front[0]['name']} to {front[-1]['name']} "
                      f"({front[-1]['gmacs']:.3g} GMACs), {'rises' if rises else 'does not rise'} on test: "
                      f"{'met' if ok else 'not met'}")
        lines.append(f"- {label(key)}: best descendant minus student at each student's GMACs (seed means): "
                     + ', '.join(parts) + f" (>= -{margin}: {'met' if met else 'not met'}; stretch >= 0: "
                     f"{'met' if stretch else 'not met'}){cost}{pareto}.")
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


def _lr_lines(preset: Dict, lr_choices: Dict[int, Dict[float, float]]) -> List[str]:
    """The report's paragraph on the direct students' learning rate: validation top-1 of each of ``direct_lrs`` per
    width at ``direct_lr_seed``, and the one chosen; nothing when one learning rate was given."""
    if not lr_choices:
        return []
    seed = direct_lr_seed(preset)
    base = float(preset['replication']['direct']['lr'])
    cells = []
    for width, vals in sorted(lr_choices.items()):
        best = max(vals, key=lambda lr: (vals[lr], lr == base))
        cells.append(f'{width}w ' + ' / '.join(f"{'**' if lr == best else ''}{lr:g}: {v:.2f}"
                                                f"{'**' if lr == best else ''}" for lr, v in vals.items()))
    return [f"Direct students' learning rate, chosen per width on the validation split at seed {seed} (val "
            f"top-1; chosen in bold, used at every seed; the sweep's other runs are not counted in the compute, "
            f"as the pool's finetune lr choice is not): " + '; '.join(cells) + '.', '']


def _report(out, preset, spec, results, compute, ancestry_cost, run=None, lr_choices=None) -> Path:
    rep_dir = out / 'report'
    rep_dir.mkdir(parents=True, exist_ok=True)
    test_images = TEST_IMAGES.get(preset.get('dataset')) if not preset.get('eval_limit') else preset['eval_limit']
    seed0 = min(next(iter(results.values())))
    plot = {_label(k): v[seed0] for k, v in results.items() if not k.endswith('zeroshot') and seed0 in v}
    pareto_plot(plot, rep_dir / 'replication.png',
                title=f'{spec.name} on {preset.get("dataset")}: top-1 vs GMACs (seed {seed0})')

    lgp_stored = pool_params(spec)['pool']
    snnet_stored = None
    snnet_dirs = sorted(out.glob('seed*/snnet_finetuned/pool'))
    if snnet_dirs:
        snnet_stored = pool_params(read_pool_config(snnet_dirs[0])['model_args']['pool'])['pool']
    candidate_stored = {}
    for name, dirname in candidate_distill_dirs(preset.get('replication', {}).get('candidates', [])).items():
        pools = sorted(out.glob(f'seed*/{dirname}/pool'))
        if pools:
            candidate_stored[name] = pool_params(read_pool_config(pools[0])['model_args']['pool'])['pool']
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
             + ', '.join(f'{_label(k)} {v}' for k, v in seeds_done.items()) + '. Top-1 on the test set '
             f'({test_images or "all"} images), mean +- sd over the seeds; every choice (the best descendant within '
             f'a budget) made on the {preset.get("val_size", 0)}-image validation split.', '',
             '## Claims', '', *claims(results, budgets, lgp_stored, snnet_stored, test_images), '',
             'Arms are compared on the seeds both ran, paired by seed: a difference counts when the mean per-seed '
             'difference exceeds twice the larger of its standard error over the seeds and the binomial error of a '
             'difference of two evaluations on the same test images (not divided by the number of seeds: every seed '
             'uses the same images); otherwise it is a tie.', '',
             *(['## Goal (issue 28)', '', *goal(results, compute), '',
                'Each candidate and the nested pool above is a design tried to close the gap; the screens that chose '
                'them, every variant with its test and validation numbers, kept or dropped, are in '
                'docs/stitching.md (sections 7-12).', ''] if 'direct' in results else []),
             '![top-1 vs GMACs](replication.png)', '',
             *_wall_time(out, preset, getattr(run, 'timings', {}), getattr(run, 'reused', ())),
             *_lr_lines(preset, lr_choices or {}),
             '## Best top-1 within a GMACs budget', '']
    head = ['method', 'seeds', 'stored params', 'smallest (params / GMACs)', 'largest (params / GMACs)'] + \
        [f'<= {g:.3g} GMACs' for g in budgets] + ['mean top-1 of stitched descendants', 'training compute (TMACs)']
    table = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for key in list(ARMS) + [k for k in results if k not in ARMS]:
        if key not in results:
            continue
        label = _label(key)
        per_seed = results[key]
        rows0 = next(iter(per_seed.values()))
        small, large = min(rows0, key=lambda r: r['gmacs']), max(rows0, key=lambda r: r['gmacs'])
        stored = snnet_stored if key.startswith('snnet') else lgp_stored if key.startswith('lgp') else \
            max(r['params'] for r in rows0) if key == 'nested finetuned' else \
            candidate_stored.get(key.rpartition(' ')[0]) or sum(r['params'] for r in rows0)
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
                      'MACs per image, a frozen teacher 1x; images = optimizer steps x batch x gradient accumulation x '
                      'processes. Distillation trains every member and its feature transforms on each image; '
                      'finetuning trains each step\'s routes (the smallest and largest member and uniform draws: their '
                      'expected MACs) with one ancestry forward. Evaluation passes and the stitch init\'s solve are not '
                      'counted; zero-shot rows add no training. The LGP and SN-Net compute is that of one pool, which '
                      'gives every descendant.', '', '## Pareto fronts (seed '
                      f'{seed0}, test top-1)', '']
    for label, rows in plot.items():
        front = pareto_front([r for r in rows if r.get('top1') is not None])
        lines.append(f"- {label}: " + ', '.join(f"{r['name']} {r['gmacs']:.3g}G {r['top1']:.2f}%" for r in front))
    lines += ['', f'## Every model (seed {seed0})', '']
    for key, per_seed in results.items():
        if seed0 in per_seed:
            lines.append(write_markdown(per_seed[seed0], title=_label(key)))
    lines += ['## Settings', '', '```yaml', yaml.safe_dump(preset, sort_keys=False).strip(), '```', '']
    path = rep_dir / 'replication.md'
    path.write_text('\n'.join(lines))
    return path


def _pool_arm(distill_dir: Path, finetune_dir: Path, eval_csv: Path, anc_macs: int) -> Dict:
    """One finetuned pool of a run on disk: its rows, spec and training compute (distillation + finetuning)."""
    spec = read_pool_config(finetune_dir / 'pool')['model_args']['pool']
    cost = _distill_cost(distill_dir, spec, anc_macs) + _finetune_cost(finetune_dir, spec, anc_macs)
    return dict(rows=_rows(eval_csv), members=' / '.join(f'{m.width}' for m in spec.members), cost=cost)


def _nested_arm(run: Path, anc_macs: int) -> Dict:
    """A nested pool (``train_nested``'s output folder): its sizes as rows, its widths, its training compute."""
    cfg = yaml.safe_load((run / 'config.yaml').read_text())
    return dict(rows=_rows(run / 'sizes.csv'), members='nested ' + ' / '.join(
        f'{w}' for w, _ in parse_sizes(cfg['sizes'])), cost=stage_images(run) * nested_macs_per_image(cfg, anc_macs))


def screen(replication_out: Path, candidates: Dict[str, Path], seed: int = 0) -> str:
    """Markdown: candidate pools (``make demo``-layout run folders: distill/, finetune/, eval/; or a nested pool,
    ``train_nested``'s output folder with its sizes.csv) against the
    replication's seed-``seed`` Learngene Pool (lstsq) and its direct students, on the same ancestry. Per pool: the
    test top-1 of the descendant chosen on val within each student's GMACs (its val top-1 beside it), the stitched
    descendants' mean, the training compute after the shared ancestry, and issue 28's goal at one seed."""
    replication_out, sd = Path(replication_out), Path(replication_out) / f'seed{seed}'
    spec = read_pool_config(sd / 'distill' / 'pool')['model_args']['pool']
    anc_cfg = yaml.safe_load((replication_out / 'ancestry' / 'config.yaml').read_text())['model_args']
    anc_macs = _vit_macs(anc_cfg['embed_dim'], anc_cfg['num_heads'], anc_cfg['depth'], spec)
    students = [_student(s_dir, 'direct', spec, anc_macs, kd=True)
                for s_dir in sorted(sd.glob('direct_*w'), key=lambda p: int(p.name[len('direct_'):-1]))
                if (s_dir / 'model' / 'model.safetensors').exists()]
    if not students:
        raise ConfigError(f'{sd} has no finished direct students (direct_<W>w); run the replication preset first')
    pools = {'LGP lstsq (replication)': _pool_arm(sd / 'distill', sd / 'lgp_lstsq_finetuned',
                                                  sd / 'eval_lgp_lstsq_finetuned' / 'descendants.csv', anc_macs)}
    for name, run in candidates.items():
        run = Path(run)
        pools[name] = _nested_arm(run, anc_macs) if (run / 'sizes.csv').exists() else \
            _pool_arm(run / 'distill', run / 'finetune', run / 'eval' / 'descendants.csv', anc_macs)
    head = ['pool', 'members', 'sizes', 'compute after the ancestry (TMACs)'] + \
        [f"<= {s['name']} ({s['gmacs']:.4g} G): test / val" for s in students] + ['stitched mean test / val']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head),
             '| direct students | one each | ' + str(len(students)) + f" | {sum(s['cost'] for s in students) / 1e12:.1f} | "
             + ' | '.join(f"{s['top1']:.2f}" for s in students) + ' | |']
    goals = []
    for name, p in pools.items():
        cells = [name, p['members'], str(len({r['gmacs'] for r in p['rows']})),
                 f"{p['cost'] / 1e12:.1f}"]
        for s in students:
            best = chosen_at(p['rows'], s['gmacs'])
            cells.append(f"{best['top1']:.2f} / {best['val_top1']:.2f} ({best['name']})" if best else '')
        stitched = _stitched_mean(p['rows'])
        cells.append(f"{stitched:.2f} / {_stitched_mean(p['rows'], 'val_top1'):.2f}" if stitched is not None else '')
        lines.append('| ' + ' | '.join(cells) + ' |')
        goals += goal({f'{name} finetuned': {seed: p['rows']}, 'direct': {seed: students}},
                      {f'{name} finetuned': p['cost'], 'direct': sum(s['cost'] for s in students)},
                      label=lambda key: key.rpartition(' ')[0])
    return '\n'.join(lines + ['', f'Goal at seed {seed} (issue 28; compute compared after the shared ancestry):', '']
                     + goals) + '\n'
