"""The recipes' option tables: --help, YAML checks, parse-time refusal of bad values, the generated docs."""
import importlib
import json
from pathlib import Path

import pytest
import yaml
from timm.data.transforms import str_to_interp_mode

from timm_learngene.data import BAD_IMAGES, DATASETS
from timm_learngene.errors import ConfigError
from timm_learngene.training.precision import MIXED_PRECISION_CHOICES
from timm_learngene.finetune import TRAIN_MODES
from timm_learngene.recipes import RECIPES, distill, evaluate, finetune, train_vit
from timm_learngene.recipes.options_doc import render
from timm_learngene.stitch_init import STITCH_INITS
from timm_learngene.training.option_groups import INTERPOLATIONS
from timm_learngene.training.options import save_config

ROOT = Path(__file__).resolve().parents[1]
TRAINING = (train_vit, distill, finetune)
POOL = {train_vit: [], distill: [], finetune: ['--pool', 'POOL'], evaluate: ['--pool', 'POOL']}


def _recipe(name):
    return importlib.import_module(f'timm_learngene.recipes.{name}')


@pytest.mark.parametrize('name', RECIPES)
def test_help_documents_every_option(name, capsys):
    module = _recipe(name)
    with pytest.raises(SystemExit) as e:
        module.parse_args(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    flat = ' '.join(out.split())
    assert ' '.join(module.OPTIONS.description.split()) in flat  # a real description, not a blank line
    for opt in module.OPTIONS:
        assert opt.flag in out, opt.name
        assert ' '.join(opt.help.split()) in flat, opt.name
        if opt.choices:
            assert '{' + ','.join(opt.choices) + '}' in out, opt.name
        if opt.default not in (None, '', []) and not opt.positional:
            assert f'(default: {opt.text(opt.default)})' in flat, opt.name


def test_enum_options_offer_what_the_library_accepts():
    assert finetune.OPTIONS['stitch_init'].choices == STITCH_INITS + ('none',)
    assert finetune.OPTIONS['train'].choices == TRAIN_MODES
    for module in TRAINING + (evaluate,):
        assert module.OPTIONS['dataset'].metavar == '{' + ','.join(DATASETS) + ',hfds/NAME,wds/NAME}'
        assert [module.OPTIONS['dataset'].kind.from_text(d) for d in DATASETS + ('hfds/org/name', 'wds/toy')] == \
            list(DATASETS) + ['hfds/org/name', 'wds/toy']
        assert module.OPTIONS['bad_images'].choices == BAD_IMAGES
        assert module.OPTIONS['mixed_precision'].choices == MIXED_PRECISION_CHOICES
        assert module.OPTIONS['interpolation'].choices == INTERPOLATIONS
    for name in INTERPOLATIONS:
        str_to_interp_mode(name)  # timm knows every one


def test_recipes_offer_only_options_they_use():
    assert 'grad_accum' not in evaluate.OPTIONS and 'resume' not in evaluate.OPTIONS
    assert 'train_limit' not in evaluate.OPTIONS and 'lr' not in evaluate.OPTIONS
    assert 'drop_path' not in finetune.OPTIONS  # the pool is loaded as it was distilled
    assert 'ce_weight' not in distill.OPTIONS  # its loss is alpha * CE + (1 - alpha) * (...)


@pytest.mark.parametrize('option,value', [('stitch_init', 'lstq'), ('train', 'everything'),
                                          ('mixed_precision', 'fp32'), ('dataset', 'imagenet'),
                                          ('bad_images', 'ignore'), ('interpolation', 'cubic')])
def test_a_bad_enum_value_stops_at_parse_time_with_nothing_written(option, value, tmp_path, capsys, monkeypatch):
    from timm_learngene.training.cli import run_cli
    monkeypatch.delenv('TIMM_LEARNGENE_TRACEBACK', raising=False)
    monkeypatch.setattr(finetune, 'load_pool', lambda *a: pytest.fail('the pool was loaded'))
    out = tmp_path / 'out'
    flag = '--' + option.replace('_', '-')
    with pytest.raises(SystemExit) as e:
        run_cli(finetune.main, ['--pool', str(tmp_path / 'pool'), '--output', str(out), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith('usage: ') and ': error: ' in err[1], err  # one short usage line
    assert f'argument {flag}: {value!r} is not one of' in err[1]
    assert not out.exists()
    # the same value in a YAML file: one ConfigError line, exit 2, nothing written
    config = tmp_path / 'c.yaml'
    config.write_text(yaml.safe_dump({option: value}))
    with pytest.raises(SystemExit) as e:
        run_cli(finetune.main, ['--pool', str(tmp_path / 'pool'), '--output', str(out), '--config', str(config)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'{option}: {value!r} is not one of' in err[0], err
    assert not out.exists()


def test_a_close_enum_typo_gets_a_suggestion():
    with pytest.raises(ConfigError, match="'lstq' is not one of lstsq, learngene, transpose, none "
                                          r"\(did you mean 'lstsq'\?\)"):
        finetune.OPTIONS.resolve({'pool': 'x', 'stitch_init': 'lstq'})


def test_an_unknown_yaml_key_gets_a_did_you_mean(tmp_path):
    config = tmp_path / 'c.yaml'
    config.write_text('epoch: 3\n')
    with pytest.raises(ConfigError, match=rf"{config}: unknown option 'epoch'; did you mean 'epochs'\?"):
        distill.parse_args(['--config', str(config)])
    config.write_text('max-steps: 3\n')
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        distill.parse_args(['--config', str(config)])
    config.write_text('zzz: 3\n')
    with pytest.raises(ConfigError, match="unknown option 'zzz'; --help"):
        distill.parse_args(['--config', str(config)])
    with pytest.raises(ConfigError, match="unknown option 'epoch'; did you mean 'epochs'"):
        distill.OPTIONS.resolve({'epoch': 3})


def test_abbreviated_flags_are_refused(capsys):
    for argv in (['--epoch', '3'], ['--max-step', '3'], ['--conf', 'x.yaml']):
        with pytest.raises(SystemExit) as e:
            distill.parse_args(argv)
        assert e.value.code == 2
        assert 'unrecognized arguments' in capsys.readouterr().err


def test_yaml_values_are_checked_and_converted_like_flags(tmp_path):
    config = tmp_path / 'c.yaml'

    def parsed(text, *argv):
        config.write_text(text)
        return distill.parse_args(['--config', str(config), *argv])

    assert parsed('lr: 1e-3\n').lr == 0.001  # YAML 1.1 reads 1e-3 as text; the flag would read it as a number
    assert parsed('epochs: "7"\n').epochs == 7
    assert parsed('aug_scale: 0.5,1\n').aug_scale == [0.5, 1.0] == parsed('aug_scale: [0.5, 1]\n').aug_scale
    assert parsed('pool: {"name": "x"}\n').pool == '{"name": "x"}'  # a spec mapping is kept as its JSON
    assert parsed('eval: false\n').eval is False and parsed('eval: false\n', '--eval').eval is True
    assert parsed('lr: 0.1\n', '--lr', '0.2').lr == 0.2  # flags override the file
    for text, match in (('lr: fast\n', "lr: expected a number, got 'fast'"),
                        ('epochs: 2.5\n', 'epochs: expected an integer, got 2.5'),
                        ('eval: 1\n', 'eval: expected true or false'),
                        ('mixed_precision: no\n', 'mixed_precision: expected a string, got False.*quote it'),
                        ('aug_scale: 3\n', 'aug_scale: expected a list'),
                        ('teacher:\n', 'teacher: expected a string, got None')):
        with pytest.raises(ConfigError, match=match):
            parsed(text)
    with pytest.raises(ConfigError, match='model_args: expected a mapping'):
        train_vit.OPTIONS.resolve({'model_args': [1]})


def test_flags_booleans_lists_and_json():
    cfg = train_vit.parse_args(['--no-eval', '--cpu', '--aug-scale', '0.5, 1', '--model-args', '{"depth": 2}'])
    assert cfg.eval is False and cfg.cpu is True and cfg.aug_scale == [0.5, 1.0] and cfg.model_args == {'depth': 2}
    cfg = finetune.parse_args(['--anchors', 'a,b,,c'])
    assert cfg.anchors == ['a', 'b', 'c'] and cfg.pool == ''


def test_resolving_a_mapping_equals_parsing_its_flags():
    options = dict(pool={'name': 'x'}, max_steps=4, eval=False, aug_scale=[0.7, 1.0], lr=0.002, num_classes=10,
                   mixed_precision='bf16', auto_augment='', cpu=True)
    argv = ['--pool', json.dumps(options['pool']), '--max-steps', '4', '--no-eval', '--aug-scale', '0.7,1.0',
            '--lr', '0.002', '--num-classes', '10', '--mixed-precision', 'bf16', '--auto-augment', '', '--cpu']
    assert distill.OPTIONS.resolve(options) == distill.parse_args(argv)


def test_cross_option_checks_happen_at_parse_time():
    with pytest.raises(ConfigError, match='exactly one of --pool'):
        finetune.parse_args([])
    with pytest.raises(ConfigError, match='exactly one of --pool'):
        finetune.parse_args(['--pool', 'p', '--anchors', 'a,b'])
    with pytest.raises(ConfigError, match='--pool FOLDER'):
        evaluate.parse_args([])
    with pytest.raises(ConfigError, match='--kd-weight needs --teacher'):
        train_vit.parse_args(['--kd-weight', '0.5'])


def test_resume_alone_continues_in_its_folder():
    assert distill.parse_args(['--resume', 'runs/a']).output == 'runs/a'
    assert distill.parse_args(['--resume', 'runs/a', '--output', 'runs/b']).output == 'runs/b'
    assert distill.OPTIONS.resolve({'resume': 'runs/a'}).output == 'runs/a'


@pytest.mark.parametrize('module', TRAINING + (evaluate,))
def test_written_config_reproduces_the_run(module, tmp_path):
    cfg = module.parse_args(POOL[module] + ['--lr', '0.3'] * ('lr' in module.OPTIONS) + ['--no-fused-attn'])
    save_config(cfg, tmp_path / 'config.yaml')
    again = module.parse_args(['--config', str(tmp_path / 'config.yaml')])
    assert vars(again) == dict(vars(cfg), config=str(tmp_path / 'config.yaml'))


def test_defaults_are_copies():
    a = train_vit.OPTIONS.resolve({})
    a.model_args['depth'] = 3
    a.aug_scale.append(9)
    b = train_vit.OPTIONS.resolve({})
    assert b.model_args == {} and b.aug_scale == [0.7, 1.0]


def test_options_doc_is_up_to_date():
    committed = (ROOT / 'docs' / 'options.md').read_text()
    assert committed == render(), 'docs/options.md is out of date: run `make options-doc`'
