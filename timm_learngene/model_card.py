"""The README.md model card and the Pareto plot of a pool repo on the Hugging Face Hub.

Both are rendered from the pool folder's ``config.json`` alone (the spec, the descendant list with any measured
values, the training recipe that ``save_pool`` recorded), so a card always describes the weights next to it.
"""
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml
from huggingface_hub import EvalResult, ModelCardData

from .evaluation import LATENCY_XLABEL, draw_pareto, latency_series, pareto_plot, write_markdown
from .models.learngene_pool import HUB_REPOS
from .pool_reader import descendant_table
from .profiling import read_profiles
from .spec import DescendantInfo, PoolSpec, member_params, pool_params

__all__ = ['TAGS', 'render_model_card', 'render_descendant_card', 'render_pareto', 'card_data', 'card_metadata', 'descendant_infos', 'PARETO_NAME', 'CITATION']

PARETO_NAME = 'pareto.png'

CITATION = """@inproceedings{shi2024learngenepool,
  title     = {Building Variable-sized Models via Learngene Pool},
  author    = {Shi, Boyu and Xia, Shiyu and Yang, Xu and Chen, Haokun and Kou, Zhiqiang and Geng, Xin},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2024},
  eprint    = {2312.05743},
  archivePrefix = {arXiv}
}"""

_SNNET_CITATION = """@inproceedings{pan2023snnet,
  title     = {Stitchable Neural Networks},
  author    = {Pan, Zizheng and Cai, Jianfei and Zhuang, Bohan},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}"""

# Recipe dataset names (timm_learngene.data) -> Hub dataset ids for the card metadata, and their display names.
_HUB_DATASETS = {'fashion_mnist': 'zalando-datasets/fashion_mnist', 'imagenet': 'imagenet-1k'}
_DATASET_NAMES = {'zalando-datasets/fashion_mnist': 'Fashion-MNIST', 'imagenet-1k': 'ImageNet-1K'}
TAGS = ['image-classification', 'timm', 'learngene-pool', 'model-stitching', 'vision-transformer']


def descendant_infos(config: Mapping[str, Any]) -> List[DescendantInfo]:
    """Every descendant of the pool in ``config``, ranked, with measured values (:func:`descendant_table`)."""
    return descendant_table(config)


def _spec(config: Mapping[str, Any]) -> PoolSpec:
    pool = config['model_args']['pool']
    return pool if isinstance(pool, PoolSpec) else PoolSpec.from_dict(pool)


def _recipe_datasets(recipe: Any, num_classes: int) -> List[str]:
    """Hub dataset ids for the ``dataset`` entries of a recipe (nested per stage: ``{'distill': {...}}``)."""
    found = []

    def walk(node):
        if isinstance(node, Mapping):
            name = node.get('dataset')
            if isinstance(name, str):
                if name in _HUB_DATASETS:
                    found.append(_HUB_DATASETS[name])
                elif name == 'folder' and num_classes == 1000:
                    found.append('imagenet-1k')  # the ImageNet recipes read an ImageFolder tree
            for v in node.values():
                if isinstance(v, Mapping):
                    walk(v)
    walk(recipe)
    return list(dict.fromkeys(found))


def card_data(config: Mapping[str, Any], datasets: Optional[Sequence[str]] = None,
              license: Optional[str] = None) -> ModelCardData:
    """The card's metadata as huggingface_hub's ``ModelCardData``: ``library_name``, ``license``, ``tags``,
    ``datasets`` (when known), ``pipeline_tag``, and, when top-1 is recorded and the dataset is known, a
    ``model-index`` with each measured descendant's test top-1 (the Hub shows it as the model's evaluation results).

    ``datasets`` defaults to the Hub ids of the datasets named in the recorded recipe (Fashion-MNIST; a 1000-class
    ImageFolder recipe is taken to be ImageNet-1K); pass it to state them yourself.
    """
    spec = _spec(config)
    cfg = config.get('pretrained_cfg') or {}
    if datasets is None:
        datasets = _recipe_datasets(config.get('recipe'), spec.num_classes)
    datasets = list(datasets or [])
    results = []
    if datasets:
        results = [EvalResult(task_type='image-classification', dataset_type=datasets[0],
                              dataset_name=_DATASET_NAMES.get(datasets[0], datasets[0]), dataset_split='test',
                              metric_type='accuracy', metric_name=f'{d.name} top-1 (%)', metric_value=d.metrics['top1'])
                   for d in descendant_infos(config) if d.metrics.get('top1') is not None]
    return ModelCardData(library_name='timm', license=license or cfg.get('license') or 'apache-2.0',
                         tags=list(TAGS), datasets=datasets or None, pipeline_tag='image-classification',
                         model_name=f'learngene-pool-{spec.name}' if results else None,
                         eval_results=results or None)


def card_metadata(config: Mapping[str, Any], datasets: Optional[Sequence[str]] = None,
                  license: Optional[str] = None) -> Dict[str, Any]:
    """:func:`card_data` as the dict that the card's YAML front matter holds."""
    return card_data(config, datasets=datasets, license=license).to_dict()


def _descendant_rows(infos: Sequence[DescendantInfo]) -> List[Dict[str, Any]]:
    return [{'name': d.name, 'route': d.route_label, 'params': d.params, 'GMACs': _gmacs(d.gmacs),
             'top-1 (%)': d.metrics.get('top1')} for d in infos]


def _gmacs(g: float) -> str:
    return f'{g:.2f}' if g >= 0.1 else f'{g:.2g}'  # small pools (28 px Fashion-MNIST) would all read 0.00


def render_pareto(config: Mapping[str, Any], path: Union[str, Path]) -> Tuple[Path, str]:
    """Plot every descendant of the pool in ``config`` to ``path`` (PNG): measured top-1 against GMACs with the
    Pareto front when any top-1 is recorded, else parameters against GMACs. Returns ``(path, description)``."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the model card's plot needs matplotlib: pip install 'timm-learngene[train]'") from None
    spec = _spec(config)
    infos = descendant_infos(config)
    measured = [d for d in infos if 'top1' in d.metrics]
    path = Path(path)
    if measured:
        rows = [dict(name=d.name, gmacs=d.gmacs, top1=d.metrics['top1']) for d in measured]
        title = f'Learngene Pool {spec.name}: top-1 vs GMACs'
        series = latency_series([p for p in read_profiles(config) if p.device.batch_size == 1],
                                {d.name: d.metrics['top1'] for d in measured})
        description = (f'top-1 against GMACs of the measured descendants ({len(measured)} of {len(infos)}), '
                       f'with the Pareto front')
        if not series:
            pareto_plot({f'{spec.name} descendants': rows}, path, title=title)
            return path, description
        # a second panel: top-1 against the latency measured on each profiled device (batch 1)
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=120)
        draw_pareto(left, {f'{spec.name} descendants': rows}, title)
        draw_pareto(right, series, 'top-1 vs measured latency (batch 1)', x='latency_ms',
                    xerr=('latency_q1_ms', 'latency_q3_ms'), xlabel=LATENCY_XLABEL)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path, description + f'; and against the latency measured on {len(series)} device(s)'
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter([d.gmacs for d in infos], [d.params / 1e6 for d in infos], s=18)
    for d in infos:
        ax.annotate(d.name, (d.gmacs, d.params / 1e6), fontsize=7, xytext=(3, 3), textcoords='offset points')
    ax.set_xlabel('GMACs per image')
    ax.set_ylabel('parameters (M)')
    ax.set_title(f'Learngene Pool {spec.name}: size and cost of every descendant (no top-1 measured yet)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path, f'parameters against GMACs of all {len(infos)} descendants (no top-1 measured yet)'


def _latency_section(config: Mapping[str, Any], infos: Sequence[DescendantInfo]) -> Optional[str]:
    """A table of the measured latencies (median ms, interquartile spread), one column per profiled device."""
    profiles = read_profiles(config)
    if not profiles:
        return None
    header = ['name'] + [f'({i + 1})' for i in range(len(profiles))]
    rows = []
    for d in infos:
        cells = [d.name]
        for p in profiles:
            r = p.results.get(d.name)
            cells.append(f"{r['median_ms']:.3g} ± {(r['q3_ms'] - r['q1_ms']) / 2:.2g}" if r else '')
        rows.append(cells)
    devices = '\n'.join(f'- ({i + 1}) {p.device.label}' + (f', measured {p.measured}' if p.measured else '')
                        for i, p in enumerate(profiles))
    return (f'Median milliseconds per forward pass ± half the interquartile range, measured with '
            f'`python -m timm_learngene profile` (warm-up, fixed threads, interleaved repeats) on:\n\n{devices}\n\n'
            + _table(header, rows) + '\n\nThe best descendant within a latency budget on one of these devices: '
            '`python -m timm_learngene select POOL_DIR --max-latency-ms 5 --device cpu`; measure your own device '
            'with `python -m timm_learngene profile POOL_DIR`.')


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)


def _usage(repo_id: str, spec: PoolSpec, infos: Sequence[DescendantInfo]) -> str:
    middle = infos[len(infos) // 2].name
    registered = ''
    prefix = {'deit_base_l6': 'learngene_pool', 'deit_base_l9': 'learngene_pool_l9'}.get(spec.name)
    if prefix and HUB_REPOS.get(spec.name) == repo_id:
        registered = (f"\n# the registered names point at this repo\n"
                      f"model = timm.create_model('{prefix}_{middle}', pretrained=True)\n")
    return f"""```python
import timm
import timm_learngene  # pip install timm-learngene; registers the learngene_pool models with timm

# one descendant: downloads the pool once into the HF cache, builds and loads only that descendant's tensors
model = timm.create_model('hf-hub:{repo_id}', descendant='{middle}', pretrained=True).eval()
{registered}
# a fixed revision (branch, tag or commit)
model = timm.create_model('hf-hub:{repo_id}@main', descendant='{middle}', pretrained=True)

# the whole pool (every member and stitch layer); pool(x, 's3') runs descendant s3
pool = timm.create_model('hf-hub:{repo_id}', pretrained=True)

# the best descendant within a budget
from huggingface_hub import hf_hub_download
from timm_learngene import select
name = select(hf_hub_download('{repo_id}', 'config.json'), max_gmacs={infos[-1].gmacs / 2:.3g})
```

Offline: once downloaded, `HF_HUB_OFFLINE=1` loads from the HF cache. Without access to the Hub, download the
repo elsewhere and load the folder with `timm.create_model('local-dir:PATH', descendant='{middle}', pretrained=True)`,
or set `HF_ENDPOINT` to a mirror."""


def _pool_section(spec: PoolSpec) -> str:
    rows = [(m.name, str(m.width), str(m.heads), str(m.depth), f'{member_params(spec, m.name) / 1e6:.2f}M')
            for m in spec.members]
    sizes = pool_params(spec)
    text = [_table(['member', 'width', 'heads', 'blocks', 'params'], rows), '',
            f'- input: {spec.in_chans} x {spec.img_size} x {spec.img_size}, patch {spec.patch_size}, '
            f'{spec.num_classes} classes',
            f"- stitching between nearest members ({'both ways' if spec.two_way else 'smaller -> larger'}), "
            f'sliding window kernel {spec.stitch_kernel}, '
            f'stride {spec.stitch_stride}: {spec.num_windows} stitch layers per pair',
            f'- stored: {sizes["pool"]:,} parameters in members and stitch layers'
            + (f', plus {sizes["transforms"]:,} in the distillation transformation matrices' if sizes['transforms']
               else '')]
    if spec.distill is not None:
        d = spec.distill
        text.append(f'- ancestry (teacher): `{d.teacher}` ({d.teacher_width} wide, {d.teacher_depth} blocks); '
                    f'member blocks {list(d.member_blocks)} matched to ancestry blocks {list(d.teacher_blocks)}')
    return '\n'.join(text)


def _training_section(recipe: Any) -> str:
    if not recipe:
        return ('No training recipe was recorded with this pool (its config.json has no `recipe`; '
                '`save_pool(..., recipe=cfg)` records one).')
    body = yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip()
    return ('The recipe that produced these weights, as `recipes/distill.py` / `recipes/finetune.py` recorded it '
            '(config.json, key `recipe`):\n\n```yaml\n' + body + '\n```')


def render_model_card(config: Mapping[str, Any], repo_id: str, image: Optional[str] = PARETO_NAME,
                      image_description: str = 'descendants of the pool', datasets: Optional[Sequence[str]] = None,
                      license: Optional[str] = None) -> str:
    """README.md for the pool repo ``repo_id`` from its parsed ``config.json``.

    Args:
        config: the pool's config.json as a dict (``model_args.pool`` a dict or a :class:`PoolSpec`).
        repo_id: the Hub repo, used in the usage examples.
        image: file name of the plot in the repo (written by :func:`render_pareto`), or ``None`` for no plot.
        image_description: alt text of the plot.
        datasets, license: card metadata overrides (see :func:`card_metadata`).
    """
    spec = _spec(config)
    infos = descendant_infos(config)
    front = card_data(config, datasets=datasets, license=license).to_yaml().rstrip()
    n_top1 = sum('top1' in d.metrics for d in infos)
    smallest, largest = infos[0], max(infos, key=lambda d: d.params)
    members = ', '.join(f'`{m.name}` ({m.width} wide, {m.depth} blocks)' for m in spec.members)
    origin = (f'auxiliary ViTs distilled from one ancestry model (`{spec.distill.teacher}`)' if spec.distill
              else 'ViTs')
    measured = (f'Top-1 as measured and recorded in config.json (`recipes/evaluate.py`) for {n_top1} of '
                f'{len(infos)} descendants; blank where not measured.' if n_top1 else
                'No top-1 has been measured for this pool yet (`recipes/evaluate.py` records it in config.json).')
    two_way = '; two-way, also the first blocks of a larger member and the last of a smaller one' if spec.two_way \
        else ''
    parts = [
        f'---\n{front}\n---',
        f'# Learngene Pool `{spec.name}`',
        f'A **Learngene Pool** ([Shi et al., AAAI 2024](https://arxiv.org/abs/2312.05743)) for '
        f'[timm](https://github.com/huggingface/pytorch-image-models), built with '
        f'[timm-learngene](https://pypi.org/project/timm-learngene/). One repo holds the whole pool: the blocks '
        f'("learngene instances") of {len(spec.members)} {origin}, {members}, and the stitch layers between them. '
        f'From it, {len(infos)} **descendant** models of different sizes are built without further training, from '
        f'{smallest.params / 1e6:.2f}M parameters / {_gmacs(smallest.gmacs)} GMACs (`{smallest.name}`) to '
        f'{largest.params / 1e6:.2f}M / {_gmacs(largest.gmacs)} GMACs (`{largest.name}`). A descendant runs the '
        f'first blocks of a smaller member, one stitch layer, and the last blocks of a larger member (SN-Net style '
        f"stitching){two_way}.",
        '## Descendants',
        f'Ranked by GMACs (multiply-adds per image at {spec.img_size} px). {measured}',
        write_markdown(_descendant_rows(infos)).rstrip(),
    ]
    if image:
        parts.append(f'![{image_description}]({image})')
    latency = _latency_section(config, infos)
    if latency:
        parts += ['## Measured latency', latency]
    parts += [
        '## Usage', _usage(repo_id, spec, infos),
        '## The pool', _pool_section(spec),
        '## Training', _training_section(config.get('recipe')),
        '## Files',
        '`model.safetensors` (every tensor of the pool; a descendant reads only its own), `config.json` (timm\'s '
        'layout; `model_args` holds the pool spec and the descendant list), this card and the plot. No pickled '
        'files.',
        '## Citation', f'```bibtex\n{CITATION}\n```',
        'Stitching follows SN-Net:', f'```bibtex\n{_SNNET_CITATION}\n```',
    ]
    return '\n\n'.join(parts) + '\n'


def render_descendant_card(config: Mapping[str, Any], repo_id: Optional[str] = None,
                           source: Optional[str] = None) -> str:
    """README.md of one descendant saved alone (:func:`~timm_learngene.save_descendant`, ``export --format timm``)
    from its parsed ``config.json``: Hub metadata (top-1 in a ``model-index`` when recorded and the dataset is
    known), the pool it was cut from (``source``: where that pool was), and how to load it (from ``repo_id`` once
    pushed, else from a local folder)."""
    spec = _spec(config)
    name = config['model_args']['descendant']
    info = next(d for d in descendant_infos(config) if d.name == name)
    cfg = config.get('pretrained_cfg') or {}
    datasets = _recipe_datasets(config.get('recipe'), spec.num_classes)
    top1 = info.metrics.get('top1')
    results = None
    if datasets and top1 is not None:
        results = [EvalResult(task_type='image-classification', dataset_type=datasets[0],
                              dataset_name=_DATASET_NAMES.get(datasets[0], datasets[0]), dataset_split='test',
                              metric_type='accuracy', metric_name='top-1 (%)', metric_value=top1)]
    data = ModelCardData(library_name='timm', license=cfg.get('license') or 'apache-2.0', tags=list(TAGS),
                         datasets=datasets or None, pipeline_tag='image-classification',
                         model_name=f'learngene-pool-{spec.name}-{name}' if results else None, eval_results=results)
    facts = f'route `{info.route_label}`, {info.params:,} parameters, {_gmacs(info.gmacs)} GMACs per image'
    if top1 is not None:
        facts += f', test top-1 {top1:.2f}% as measured in the pool'
    where = f' (folder `{source}`)' if source else ''
    load = (f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()" if repo_id else
            "model = timm.create_model('local-dir:PATH_TO_THIS_FOLDER', pretrained=True).eval()\n"
            "# as its own Hub repo: python -m timm_learngene push PATH_TO_THIS_FOLDER ORG/NAME, then 'hf-hub:ORG/NAME'")
    return '\n\n'.join([
        f'---\n{data.to_yaml().rstrip()}\n---',
        f'# Descendant `{name}` of the learngene pool `{spec.name}`',
        f'One model cut out of the Learngene Pool `{spec.name}`{where} by '
        f'[timm-learngene](https://pypi.org/project/timm-learngene/): {facts}. This repo holds only this '
        f"descendant's tensors (`model.safetensors`) and timm's `config.json`; the rest of the pool is not needed.",
        '## Usage',
        f"```python\nimport timm\nimport timm_learngene  # pip install timm-learngene; registers the architecture\n\n"
        f"{load}\ncfg = timm.data.resolve_data_config(model=model)  # the preprocessing it was trained with\n"
        f"transform = timm.data.create_transform(**cfg)\n```",
        '## Citation', f'```bibtex\n{CITATION}\n```',
    ]) + '\n'
