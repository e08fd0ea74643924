"""The launch configs for clusters (recipes/accelerate/) and the scaling benchmark's report (issue 30)."""
import json
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('name, machines, processes', [('1node_8gpu', 1, 8), ('2node_8gpu', 2, 16)])
def test_launch_configs_are_ddp_bf16_at_their_sizes(name, machines, processes):
    cfg = load_config_from_file(str(ROOT / 'recipes' / 'accelerate' / f'{name}.yaml'))
    assert (cfg.distributed_type.value, cfg.num_machines, cfg.num_processes, cfg.mixed_precision, cfg.use_cpu) == \
        ('MULTI_GPU', machines, processes, 'bf16', False)
    assert f'recipes/accelerate/{name}.yaml' in (ROOT / 'README.md').read_text()


def test_scaling_report_gives_each_run_its_efficiency_against_one_process(tmp_path):
    sys.path.insert(0, str(ROOT))
    from benchmarks.scaling import report
    rows = [dict(stage='distill', processes=1, img_s=100.0, mfu=0.4), dict(stage='distill', processes=8, img_s=720.0,
                                                                          mfu=0.36),
            dict(stage='finetune', processes=4, img_s=200.0, mfu=None)]
    (tmp_path / 's.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    lines = report(tmp_path / 's.jsonl').splitlines()
    assert lines[2] == '| distill | 1 | 100 | 100 | 40.0% | 1.00 |'
    assert lines[3] == '| distill | 8 | 720 | 90 | 36.0% | 0.90 |'
    assert lines[4] == '| finetune | 4 | 200 | 50 | - | no 1-process run |'
