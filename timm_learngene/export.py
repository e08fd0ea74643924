"""Ship one descendant without its pool: a standalone timm folder, an ONNX graph or a ``torch.export`` program.

    python -m timm_learngene export out/finetune/pool s3 out/s3                          # timm folder (default)
    python -m timm_learngene export out/finetune/pool s3 out/s3-onnx --format onnx
    python -m timm_learngene export out/finetune/pool s3 out/s3-pt2 --format torch.export

Every format is written from the descendant loaded out of the pool folder (only its tensors are read), in fp32
and eval mode, with a dynamic batch dimension. ``onnx`` and ``torch.export`` check their output against the
PyTorch descendant before they return (max abs difference at most ``tolerance``, 1e-4, at two batch sizes; an
ONNX graph is checked with onnxruntime). Next to the graph: ``export.json`` (where it came from, the input it takes,
the preprocessing, the checked difference) and a ``README.md`` that names the pool.

- ``onnx``: ``model.onnx`` (input ``pixel_values`` B x C x H x W float32, output ``logits`` B x classes), written by
  torch's dynamo-based ONNX exporter. Needs ``pip install 'timm-learngene[onnx]'`` (onnx, onnxscript,
  onnxruntime).
- ``torch.export``: ``model.pt2`` (``torch.export.save``; ``torch.export.load(path).module()`` runs it). Its weights
  are stored as raw bytes, never pickled (checked when written); like any .pt2, load only files you trust.
- ``timm``: a folder ``timm.create_model('local-dir:OUT', pretrained=True)`` loads with no pool, written by
  :func:`timm_learngene.save_descendant`, with what the pool measured for it and a ``README.md`` model card naming
  the pool (push it as its own repo with ``python -m timm_learngene push OUT ORG/NAME``).
"""
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from .pool_writer import load_pool, save_descendant
from .errors import LearngeneError
from .model_card import render_descendant_card
from .pool_reader import read_pool_config
from .spec import find_descendant
from .version import __version__

__all__ = ['FORMATS', 'ExportError', 'export_descendant', 'export_onnx', 'export_torch', 'DEFAULT_TOLERANCE']

FORMATS = ('timm', 'onnx', 'torch.export')
DEFAULT_TOLERANCE = 1e-4
_MAX_BATCH = 4096
_ONNX_EXTRA = "pip install 'timm-learngene[onnx]'"


class ExportError(LearngeneError):
    """A descendant could not be exported: a missing optional package, an output folder in the way, or an
    exported graph whose output differs from the PyTorch model's."""


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f'{out_dir} exists and is not an empty folder; export into a new folder')


def _inputs(spec, *batches: int) -> list:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, spec.in_chans, spec.img_size, spec.img_size, generator=g) for b in batches]


def _batch_dim():
    # the example batch is 2: torch.export specialises a dimension whose example size is 0 or 1
    return {'x': {0: torch.export.Dim('batch', min=1, max=_MAX_BATCH)}}


def _max_diff(run, model: torch.nn.Module, inputs) -> float:
    worst = 0.0
    with torch.inference_mode():
        for x in inputs:
            want = model(x)
            got = run(x)
            if tuple(got.shape) != tuple(want.shape):
                raise ExportError(f'the exported graph returns shape {list(got.shape)} for a batch of {x.shape[0]}, '
                                  f'the model {list(want.shape)}')
            worst = max(worst, (got.float() - want.float()).abs().max().item())
    return worst


def _check_parity(what: str, diff: float, tolerance: float) -> None:
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(f'{what} differs from the PyTorch descendant by {diff:.3g} (max abs, fp32), more than the '
                          f'tolerance {tolerance:g}; the export is not faithful (report it with the pool spec)')


def export_onnx(model: torch.nn.Module, path: Union[str, Path], opset: Optional[int] = None,
                tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Write ``model`` (a descendant, fp32, eval) to ``path`` as ONNX with a dynamic batch dimension and check it
    with onnxruntime at batch sizes 1 and 3; returns the max abs difference found."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        raise ExportError(f'--format onnx needs onnx, onnxscript and onnxruntime ({e}); {_ONNX_EXTRA}') from None
    spec = model.pool_spec
    example, *checks = _inputs(spec, 2, 1, 3)
    kwargs = {} if opset is None else {'opset_version': opset}
    torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=['pixel_values'],
                      output_names=['logits'], dynamic_shapes=_batch_dim(), external_data=False, verbose=False,
                      **kwargs)
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])

    def run(x):
        return torch.from_numpy(session.run(['logits'], {'pixel_values': x.numpy()})[0])
    diff = _max_diff(run, model, checks)
    _check_parity(f'the ONNX graph {path}', diff, tolerance)
    return diff


def _pickled_entries(path: Path) -> list:
    """Names of the tensors a .pt2 archive stores pickled (a tensor subclass would be)."""
    pickled = []
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith(('model_weights_config.json', 'model_constants_config.json')):
                cfg = json.loads(z.read(name)).get('config', {})
                pickled += [k for k, v in cfg.items() if isinstance(v, dict) and v.get('use_pickle')]
    return pickled


def export_torch(model: torch.nn.Module, path: Union[str, Path], tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Write ``model`` to ``path`` with ``torch.export`` (dynamic batch) and ``torch.export.save``; check that the
    archive pickles no tensor and that the reloaded program matches at batch sizes 1 and 3. Returns the max abs
    difference."""
    spec = model.pool_spec
    example, *checks = _inputs(spec, 2, 1, 3)
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))
    pickled = _pickled_entries(Path(path))
    if pickled:
        raise ExportError(f'torch.export.save pickled tensors {pickled} into {path}; this model cannot be shipped '
                          f'as a pickle-free .pt2')
    loaded = torch.export.load(str(path)).module()
    diff = _max_diff(loaded, model, checks)
    _check_parity(f'the exported program {path}', diff, tolerance)
    return diff


def _save_timm(pool_dir: Path, name: str, out_dir: Path, config: Dict[str, Any]) -> Path:
    """:func:`~timm_learngene.pool_writer.save_descendant` of ``name`` (its tensors only, timm's config.json with the
    pool's preprocessing and recipe, and what the pool measured for it) plus a model card naming the pool, written
    into a temporary folder and renamed to ``out_dir`` when complete."""
    model = load_pool(pool_dir, descendant=name).eval()  # its info carries what the pool measured for it
    tmp = _temp_dir(out_dir)
    try:
        save_descendant(model, tmp, recipe=config.get('recipe'))
        written = json.loads((tmp / 'config.json').read_text())
        (tmp / 'README.md').write_text(render_descendant_card(written, source=str(pool_dir)))
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _temp_dir(out_dir: Path) -> Path:
    """A temporary folder next to ``out_dir``: a failed export leaves nothing behind."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f'.{out_dir.name}.', suffix='.tmp'))


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``out_dir`` (absent or empty: checked before the export started)."""
    if out_dir.is_dir():
        out_dir.rmdir()
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
    os.rename(tmp, out_dir)


def _readme(fmt: str, info: Dict[str, Any]) -> str:
    src = info['source']
    c, h, w = info['input_size']
    if fmt == 'onnx':
        use = ("```python\nimport numpy as np, onnxruntime\n"
               "session = onnxruntime.InferenceSession('model.onnx')\n"
               f"logits = session.run(['logits'], {{'pixel_values': np.zeros((4, {c}, {h}, {w}), np.float32)}})[0]\n"
               "```")
    else:
        use = ("```python\nimport torch\nmodel = torch.export.load('model.pt2').module()\n"
               f"logits = model(torch.zeros(4, {c}, {h}, {w}))\n```")
    cfg = info['pretrained_cfg']
    return '\n\n'.join([
        f"# Descendant `{info['descendant']}` of the learngene pool `{src['pool']}` ({fmt})",
        f"One model cut out of the pool `{src['pool']}` (folder `{src['pool_dir']}`) by "
        f"[timm-learngene](https://pypi.org/project/timm-learngene/) {__version__}: route `{info['route_label']}`, "
        f"{info['params']:,} parameters, {info['gmacs']:.4g} GMACs per image. The file runs without the pool or "
        f"timm-learngene.",
        use,
        f"Input: float32 images B x {c} x {h} x {w} (any batch size), normalised with mean {cfg.get('mean')} and "
        f"std {cfg.get('std')}; output: logits B x {info['num_classes']}. Checked against the PyTorch descendant "
        f"when written: max abs difference {info['max_abs_diff']:.3g} (tolerance {info['tolerance']:g}).",
        'Learngene Pool: Shi et al., "Building Variable-sized Models via Learngene Pool", AAAI 2024 '
        '(arXiv:2312.05743).',
    ]) + '\n'


def export_descendant(pool_dir: Union[str, Path], descendant: str, out_dir: Union[str, Path],
                      format: str = 'timm', opset: Optional[int] = None,
                      tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Export descendant ``descendant`` (``'s3'``) of the pool folder ``pool_dir`` into the new (or empty) folder
    ``out_dir`` in ``format`` (``timm``, ``onnx``, ``torch.export``; see the module doc). Returns ``out_dir``.

    ``opset``: the ONNX opset (default: the exporter's). ``tolerance``: the largest max abs difference (fp32)
    accepted between the exported graph and the PyTorch descendant; :class:`ExportError` above it.
    """
    if format not in FORMATS:
        raise ExportError(f'unknown export format {format!r}; choose one of {", ".join(FORMATS)}')
    pool_dir, out_dir = Path(pool_dir), Path(out_dir)
    config = read_pool_config(pool_dir)
    spec = config['model_args']['pool']
    info = find_descendant(spec, descendant)
    _check_out_dir(out_dir)
    if format == 'timm':
        return _save_timm(pool_dir, info.name, out_dir, config)
    model = load_pool(pool_dir, descendant=info.name).float().eval()
    # written into a temporary folder next to out_dir and renamed when complete and checked
    tmp = _temp_dir(out_dir)
    try:
        if format == 'onnx':
            graph = tmp / 'model.onnx'
            diff = export_onnx(model, graph, opset=opset, tolerance=tolerance)
        else:
            graph = tmp / 'model.pt2'
            diff = export_torch(model, graph, tolerance=tolerance)
        cfg = {k: v for k, v in config['pretrained_cfg'].items() if k in (
            'input_size', 'mean', 'std', 'crop_pct', 'crop_mode', 'interpolation', 'license')}
        meta = dict(
            format=format, file=graph.name, descendant=info.name, route=[list(s) for s in info.route],
            route_label=info.route_label, params=info.params, gmacs=round(info.gmacs, 4),
            num_classes=spec.num_classes, input_size=[spec.in_chans, spec.img_size, spec.img_size],
            input_name='pixel_values' if format == 'onnx' else 'x', output_name='logits', dynamic_batch=True,
            pretrained_cfg=cfg, max_abs_diff=diff, tolerance=tolerance, torch=torch.__version__,
            timm_learngene=__version__, source=dict(pool=spec.name, pool_dir=str(pool_dir)),
        )
        (tmp / 'export.json').write_text(json.dumps(meta, indent=2))
        (tmp / 'README.md').write_text(_readme(format, meta))
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
