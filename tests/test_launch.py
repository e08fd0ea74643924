"""Launcher first: a flag wins, else accelerate launch's precision and device, else the YAML file or the default;
the run records what it used and where it came from."""
import json

import pytest
import yaml

from timm_learngene.errors import ConfigError
from timm_learngene.recipes import distill, train_vit
from timm_learngene.training.launch import apply_launcher

TINY_VIT = json.dumps(dict(embed_dim=16, depth=1, num_heads=2, img_size=16, patch_size=8, in_chans=3, num_classes=5))


def _yaml(tmp_path, **values):
    path = tmp_path / 'cfg.yaml'
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_parse_knows_which_options_came_from_flags(tmp_path):
    cfg = distill.parse_args(['--config', _yaml(tmp_path, mixed_precision='no', cpu=True), '--lr', '0.1', '--no-eval'])
    assert cfg.given == {'lr', 'eval'}
    assert 'given' not in vars(cfg)  # not an option: never written to config.yaml
    assert cfg.mixed_precision == 'no' and cfg.cpu is True
    assert distill.OPTIONS.resolve({'lr': 0.1}).given == frozenset()  # a preset sets no flags


@pytest.mark.parametrize('argv, env, want, source', [
    ([], {}, 'auto', 'config'),
    ([], {'ACCELERATE_MIXED_PRECISION': 'bf16'}, 'bf16', 'accelerate launch'),
    (['--config-mp', 'no'], {'ACCELERATE_MIXED_PRECISION': 'bf16'}, 'bf16', 'accelerate launch'),
    (['--mixed-precision', 'no'], {'ACCELERATE_MIXED_PRECISION': 'bf16'}, 'no', 'flag'),
    (['--mixed-precision', 'bf16'], {}, 'bf16', 'flag'),
])
def test_precision_launcher_first(tmp_path, monkeypatch, argv, env, want, source):
    monkeypatch.delenv('ACCELERATE_MIXED_PRECISION', raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if argv[:1] == ['--config-mp']:  # the YAML file says one thing, the launcher another
        argv = ['--config', _yaml(tmp_path, mixed_precision=argv[1])]
    cfg = distill.parse_args(argv)
    sources = apply_launcher(cfg)
    assert (cfg.mixed_precision, sources['mixed_precision']) == (want, source)


def test_cpu_launcher_first(tmp_path, monkeypatch):
    monkeypatch.setenv('ACCELERATE_USE_CPU', 'true')
    cfg = distill.parse_args(['--config', _yaml(tmp_path, cpu=False)])
    assert apply_launcher(cfg)['cpu'] == 'accelerate launch' and cfg.cpu is True
    monkeypatch.setenv('ACCELERATE_USE_CPU', 'False')
    cfg = distill.parse_args(['--cpu'])
    assert apply_launcher(cfg)['cpu'] == 'flag' and cfg.cpu is True
    monkeypatch.delenv('ACCELERATE_USE_CPU')
    cfg = distill.parse_args([])
    assert apply_launcher(cfg)['cpu'] == 'config' and cfg.cpu is False


def test_a_launcher_precision_the_recipes_cannot_run_is_a_config_error(monkeypatch):
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'fp8')
    with pytest.raises(ConfigError, match=r"mixed precision 'fp8'.*--mixed_precision bf16"):
        apply_launcher(distill.parse_args([]))
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'no')
    monkeypatch.setenv('ACCELERATE_USE_CPU', 'maybe')
    with pytest.raises(ConfigError, match="ACCELERATE_USE_CPU='maybe'"):
        apply_launcher(distill.parse_args([]))


def test_a_run_records_the_launchers_precision_over_its_yaml(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState, PartialState
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'bf16')  # what accelerate launch --mixed_precision bf16 sets
    out = tmp_path / 'run'
    try:
        train_vit.main(['--config', _yaml(tmp_path, mixed_precision='no'), '--dataset', 'synthetic', '--model-args',
                        TINY_VIT, '--batch-size', '4', '--max-steps', '1', '--num-workers', '0', '--no-eval',
                        '--train-limit', '8', '--cpu', '--output', str(out)])
    finally:
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    assert yaml.safe_load((out / 'config.yaml').read_text())['mixed_precision'] == 'bf16'
    launch = json.loads((out / 'launch.json').read_text())
    assert launch['mixed_precision'] == {'value': 'bf16', 'source': 'accelerate launch'}
    assert launch['cpu'] == {'value': True, 'source': 'flag'}
    assert launch['num_processes'] == 1 and launch['device'] == 'cpu'
