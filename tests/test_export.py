"""Exporting one descendant without its pool: ONNX (checked with onnxruntime) and torch.export graphs whose output
matches the PyTorch descendant within 1e-4 (fp32) at batch sizes other than the one exported with, and the
failures: a folder in the way, an unfaithful graph, a missing optional package, the timm format's writer."""
import importlib.util
import json
import sys

import pytest
import timm
import torch

import timm_learngene
from timm_learngene import export as export_mod
from timm_learngene.__main__ import main
from timm_learngene.errors import UnknownDescendantError
from timm_learngene.export import ExportError, export_descendant

from conftest import tiny_spec

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ('onnx', 'onnxscript', 'onnxruntime'))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxscript or onnxruntime is not installed "
                                                     "(pip install 'timm-learngene[onnx]')")


@pytest.fixture(scope='module')
def pool_dir(tmp_path_factory):
    torch.manual_seed(0)
    return timm_learngene.save_pool(timm.create_model('learngene_pool', pool=tiny_spec(6)),
                                    tmp_path_factory.mktemp('export') / 'pool')


def _reference(pool_dir, name, batch):
    model = timm_learngene.load_pool(pool_dir, descendant=name).eval()
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        return x, model(x)


@needs_onnx
def test_onnx_export_matches_the_descendant_at_any_batch(pool_dir, tmp_path):
    import onnxruntime
    out = export_descendant(pool_dir, 's5', tmp_path / 's5', format='onnx')  # s5: tiny[0..4] -> base[4..5]
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'export.json', 'model.onnx']
    session = onnxruntime.InferenceSession(str(out / 'model.onnx'), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['pixel_values']
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32] and isinstance(session.get_inputs()[0].shape[0], str)
    for batch in (1, 2, 7):
        x, want = _reference(pool_dir, 's5', batch)
        got = torch.from_numpy(session.run(['logits'], {'pixel_values': x.numpy()})[0])
        assert got.shape == (batch, 5)
        assert (got - want).abs().max().item() <= 1e-4
    meta = json.loads((out / 'export.json').read_text())
    assert (meta['format'], meta['descendant'], meta['route_label'], meta['input_name']) == (
        'onnx', 's5', 'tiny6[0..4]->base6[4..5]', 'pixel_values')
    assert meta['params'] == 45_957 and meta['max_abs_diff'] <= 1e-4 and meta['source']['pool'] == 'tiny_l6'
    assert "descendant `s5` of the learngene pool `tiny_l6`" in (out / 'README.md').read_text().lower()


def test_torch_export_matches_the_descendant_at_any_batch(pool_dir, tmp_path):
    out = export_descendant(pool_dir, 's3', tmp_path / 's3', format='torch.export')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'export.json', 'model.pt2']
    assert export_mod._pickled_entries(out / 'model.pt2') == []  # weights as raw bytes
    program = torch.export.load(str(out / 'model.pt2')).module()
    for batch in (1, 6):
        x, want = _reference(pool_dir, 's3', batch)
        with torch.inference_mode():
            got = program(x)
        assert got.shape == (batch, 5) and (got - want).abs().max().item() <= 1e-4
    assert json.loads((out / 'export.json').read_text())['file'] == 'model.pt2'


def test_an_unfaithful_graph_is_an_error_and_leaves_nothing(pool_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, '_max_diff', lambda run, model, inputs: 3e-4)
    with pytest.raises(ExportError, match=r'differs from the PyTorch descendant by 0\.0003 .*tolerance 0\.0001'):
        export_descendant(pool_dir, 's3', tmp_path / 'out', format='torch.export')
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary folder
    monkeypatch.setattr(export_mod, '_max_diff', lambda run, model, inputs: float('nan'))
    with pytest.raises(ExportError, match='differs from the PyTorch descendant by nan'):
        export_descendant(pool_dir, 's3', tmp_path / 'out', format='torch.export')


def test_export_input_errors(pool_dir, tmp_path, monkeypatch):
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'x').write_text('x')
    with pytest.raises(ExportError, match='exists and is not an empty folder'):
        export_descendant(pool_dir, 's3', tmp_path / 'full', format='torch.export')
    with pytest.raises(UnknownDescendantError, match=r"unknown descendant 's40'; pool 'tiny_l6' has s1\.\.s18"):
        export_descendant(pool_dir, 's40', tmp_path / 'a', format='torch.export')
    with pytest.raises(ExportError, match=r"unknown export format 'tflite'; choose one of timm, onnx, torch\.export"):
        export_descendant(pool_dir, 's3', tmp_path / 'a', format='tflite')
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails as if not installed
    with pytest.raises(ExportError, match=r"needs onnx, onnxscript and onnxruntime .*timm-learngene\[onnx\]"):
        export_descendant(pool_dir, 's3', tmp_path / 'b', format='onnx')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['full']


def test_timm_format_is_a_standalone_folder_timm_loads_without_the_pool(pool_dir, tmp_path):
    timm_learngene.update_pool_metrics(pool_dir, {'s3': {'top1': 61.25}})
    out = export_descendant(pool_dir, 's3', tmp_path / 'out')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    from safetensors import safe_open
    with safe_open(str(out / 'model.safetensors'), 'pt') as f:
        keys = set(f.keys())
    ref = timm_learngene.load_pool(pool_dir, descendant='s3')
    assert keys == set(ref.state_dict())  # its own tensors, nothing else of the pool
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x, want = _reference(pool_dir, 's3', 3)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), want, atol=0, rtol=0)
    card = (out / 'README.md').read_text()
    assert card.startswith('---\nlibrary_name: timm\n') and "learngene pool `tiny_l6`" in card
    assert 'test top-1 61.25%' in card and str(pool_dir) in card
    # the output folder must be new or empty; a failure leaves nothing beside it
    with pytest.raises(ExportError, match='exists and is not an empty folder'):
        export_descendant(pool_dir, 's3', out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_cli_export(pool_dir, tmp_path, capsys):
    assert main(['export', str(pool_dir), 's2', str(tmp_path / 'pt2'), '--format', 'torch.export']) == 0
    assert capsys.readouterr().out.strip() == (f'exported s2 of {pool_dir} as torch.export into {tmp_path / "pt2"}: '
                                               f'README.md, export.json, model.pt2')
    assert main(['export', str(pool_dir), 's99', str(tmp_path / 'x'), '--format', 'torch.export']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown descendant 's99'; pool 'tiny_l6' has s1..s18"]
