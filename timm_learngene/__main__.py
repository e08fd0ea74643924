"""The ``timm-learngene`` command (also ``python -m timm_learngene``): every job, one subcommand each.

Training jobs (options from each recipe's option table; ``timm-learngene JOB --help``; the [train] extra):

    timm-learngene train-vit --config CONFIG.yaml          # a plain ViT (the ancestry, or a direct KD student)
    timm-learngene distill --config CONFIG.yaml            # ancestry -> every pool member, one pass
    timm-learngene finetune --pool out/distill/pool        # stitch init + joint finetuning of the descendants
    timm-learngene evaluate --pool out/finetune/pool       # top-1, params, GMACs, img/s of every descendant
    timm-learngene pipeline --preset demo                  # the main job, every stage (make demo)
    timm-learngene describe deit_base_l6                   # the descendants of a spec or pool folder

With several processes: ``accelerate launch -m timm_learngene.recipes.distill ...`` (or ``accelerate launch
recipes/distill.py ...`` from a checkout). Jobs on a pool folder: profile its descendants on this machine, select
one, export it, push the pool (or the exported descendant).

    python -m timm_learngene profile out/finetune/pool --device cpu --threads 2     # latency into config.json
    python -m timm_learngene select out/finetune/pool --max-latency-ms 5            # the best within 5 ms here
    python -m timm_learngene export out/finetune/pool s3 out/s3 --format onnx       # one descendant, standalone
    python -m timm_learngene push out/finetune/pool my-org/learngene-pool-deit-base-l6
    python -m timm_learngene push out/finetune/pool my-org/pool --stage-only /tmp/preview   # review, upload nothing
    python -m timm_learngene push out/s3 my-org/pool-s3                             # the exported s3 as its own repo
"""
import argparse
import importlib
import sys
from typing import List, Optional

from .errors import LearngeneError
from .export import FORMATS, export_descendant
from .hub import push_to_hub, stage_for_hub
from .hub_errors import hub_error
from .logs import setup_logging
from .profiling import DTYPES, profile_pool
from .selection import select
from .training.progress import Progress

__all__ = ['main', 'parse_args', 'console', 'TRAINING_COMMANDS']

# subcommand -> (module of timm_learngene.recipes, help); run through the recipe's own option table
TRAINING_COMMANDS = {
    'train-vit': ('train_vit', 'train a plain ViT: the ancestry, or a student distilled with logit KD'),
    'train-nested': ('train_nested', 'train a nested pool: one ViT whose width slices are models of their own'),
    'distill': ('distill', 'distill an ancestry into every member of a pool, one pass'),
    'finetune': ('finetune', 'stitch init and joint finetuning of every descendant of a distilled pool'),
    'evaluate': ('evaluate', 'top-1 (test and validation), params, GMACs and img/s of every descendant'),
    'pipeline': ('pipeline', 'the main job: ancestry, distill, finetune, evaluate, report (presets demo, '
                             'replication)'),
    'describe': ('describe_pool', "a spec's or pool folder's descendants (name, route, params, GMACs)"),
    'screen': ('screen', "candidate pools against a replication run's pool and direct students"),
    'stitch-init-accuracy': ('stitch_init_accuracy', "every descendant's validation top-1 right after each stitch "
                             'init, before finetuning'),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='timm-learngene', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for name, (_, help) in TRAINING_COMMANDS.items():  # parsed by the recipe (see main); listed here for --help
        sub.add_parser(name, help=help + f' (timm-learngene {name} --help)', add_help=False)
    push = sub.add_parser('push', help='upload a pool folder (save_pool output), or one descendant exported alone '
                          '(export --format timm), with a model card to a Hub repo')
    push.add_argument('folder', help='pool or exported-descendant folder holding model.safetensors + config.json')
    push.add_argument('repo', help='Hub repo id, ORG/NAME (created if missing)')
    vis = push.add_mutually_exclusive_group()
    vis.add_argument('--private', dest='private', action='store_true', default=None,
                     help='create the repo private (only applies when it does not exist yet)')
    vis.add_argument('--public', dest='private', action='store_false', help='create the repo public')
    push.add_argument('--revision', default=None, help='branch to commit to (created if missing); default main')
    push.add_argument('--commit-message', default=None)
    push.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    push.add_argument('--token', default=None, help='Hub token; default the logged-in one or HF_TOKEN')
    push.add_argument('--dataset', dest='datasets', action='append', default=None, metavar='HUB_ID',
                      help='dataset for the model card metadata (repeatable); default from the recorded recipe')
    push.add_argument('--license', default=None, help="model card license; default the pool's (apache-2.0)")
    push.add_argument('--stage-only', default=None, metavar='DIR',
                      help='write the files that would be uploaded to DIR (new or empty) and upload nothing')

    prof = sub.add_parser('profile', help="measure every descendant's latency on this machine, into config.json",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    prof.add_argument('pool', help='pool folder (model.safetensors + config.json); only config.json is rewritten')
    prof.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    prof.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    prof.add_argument('--dtype', choices=tuple(DTYPES), default='fp32', help='weights and input cast to it')
    prof.add_argument('--threads', type=int, default=None,
                      help="torch intra-op threads while measuring (default: torch's own, the physical cores)")
    prof.add_argument('--descendants', default='', help="comma-separated names to measure ('' = all)")
    prof.add_argument('--warmup', type=int, default=3, help='untimed calls of each descendant first')
    prof.add_argument('--repeats', type=int, default=20, help='timed samples of each descendant (interleaved rounds)')
    prof.add_argument('--min-sample-ms', type=float, default=20.0,
                      help='each sample repeats the call until it lasts this long (timer resolution)')
    prof.add_argument('--no-write', dest='write', action='store_false', help='print only, leave config.json alone')
    prof.add_argument('--progress', choices=('auto', 'bar', 'lines', 'none'), default='auto')

    sel = sub.add_parser('select', help='print the best descendant within budgets (GMACs, params, measured latency)')
    sel.add_argument('pool', help='pool folder or its config.json')
    sel.add_argument('--max-gmacs', type=float, default=None)
    sel.add_argument('--max-params', type=float, default=None, help='parameters, e.g. 3e7')
    sel.add_argument('--max-latency-ms', type=float, default=None,
                     help='median latency measured by `profile` for the device below')
    sel.add_argument('--device', default='cpu', help="the device the latency was measured on: 'cpu' or 'cuda' "
                     '(this machine\'s processor and torch)')
    sel.add_argument('--dtype', choices=tuple(DTYPES), default='fp32')
    sel.add_argument('--batch-size', type=int, default=1)
    sel.add_argument('--threads', type=int, default=None, help="default: torch's own thread count")

    exp = sub.add_parser('export', help='write one descendant without its pool (timm folder, ONNX, torch.export)')
    exp.add_argument('pool', help='pool folder')
    exp.add_argument('descendant', help='descendant name, e.g. s3')
    exp.add_argument('out', help='output folder (new or empty)')
    exp.add_argument('--format', choices=FORMATS, default='timm',
                     help="timm: a folder timm.create_model('local-dir:OUT', pretrained=True) loads; onnx: "
                          'model.onnx (needs the [onnx] extra); torch.export: model.pt2')
    exp.add_argument('--opset', type=int, default=None, help="ONNX opset (default: the exporter's)")
    return parser.parse_args(argv)


def _run_profile(args) -> int:
    names = [n.strip() for n in args.descendants.split(',') if n.strip()]
    prof = profile_pool(args.pool, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                        threads=args.threads, descendants=names or None, warmup=args.warmup, repeats=args.repeats,
                        min_sample_ms=args.min_sample_ms, write=args.write,
                        progress=lambda total, desc: Progress(total, desc=desc, mode=args.progress, unit='sample',
                                                              every=max(1, total // 20)))
    print(f'{prof.device.label}; median of {args.repeats} samples per descendant, spread = interquartile range')
    print('| name | median ms | spread ms (q1..q3) | min ms | img/s |')
    print('|---|---:|---:|---:|---:|')
    for name, r in prof.results.items():
        print(f"| {name} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} ({r['q1_ms']:.3f}..{r['q3_ms']:.3f}) | "
              f"{r['min_ms']:.3f} | {r['img_s']:.1f} |")
    print(f'written into {args.pool}/config.json' if args.write else 'not written (--no-write)')
    return 0


def _run_select(args) -> int:
    device = dict(kind=args.device.split(':')[0], dtype=args.dtype, batch_size=args.batch_size)
    if args.threads is not None:
        device['threads'] = args.threads
    print(select(args.pool, max_gmacs=args.max_gmacs, max_params=args.max_params,
                 max_latency_ms=args.max_latency_ms, device=device))
    return 0


def _run_export(args) -> int:
    out = export_descendant(args.pool, args.descendant, args.out, format=args.format, opset=args.opset)
    print(f'exported {args.descendant} of {args.pool} as {args.format} into {out}: '
          f'{", ".join(sorted(p.name for p in out.iterdir()))}')
    return 0


def _run_training(command: str, argv: List[str]) -> int:
    # imported by name when asked for: the training jobs need accelerate and pyyaml (the [train] extra), which the
    # pool commands below do not
    try:
        recipe = importlib.import_module(f'{__package__}.recipes.{TRAINING_COMMANDS[command][0]}')
        cli = importlib.import_module(f'{__package__}.training.cli')
    except ImportError as e:
        print(f"error: timm-learngene {command} needs the training extra ({e}); pip install 'timm-learngene[train]'",
              file=sys.stderr)
        return 2
    prog, sys.argv[0] = sys.argv[0], f'timm-learngene {command}'  # what --help and error lines name
    try:
        cli.run_cli(recipe.main, argv)  # a documented failure exits 2 with one error line
    finally:
        sys.argv[0] = prog
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command; 0 on success, 2 with one ``error:`` line on stderr for a documented failure (a bad folder,
    pool, descendant, budget or repo id; no latency measured for the device; a missing optional package; the Hub
    offline, unreachable or refusing)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINING_COMMANDS:
        return _run_training(argv[0], argv[1:])
    args = parse_args(argv)
    setup_logging()
    if args.command != 'push':
        try:
            return {'profile': _run_profile, 'select': _run_select, 'export': _run_export}[args.command](args)
        except (LearngeneError, FileExistsError) as e:  # bad pool, budget, device or folder: the user's to fix
            print(f'error: {e}', file=sys.stderr)
            return 2
    try:
        if args.stage_only:
            out = stage_for_hub(args.folder, args.repo, args.stage_only, datasets=args.datasets, license=args.license)
            print(f'staged {", ".join(sorted(p.name for p in out.iterdir()))} in {out}; nothing uploaded')
            return 0
        info = push_to_hub(args.folder, args.repo, private=args.private, token=args.token, revision=args.revision,
                           commit_message=args.commit_message, create_pr=args.create_pr, datasets=args.datasets,
                           license=args.license)
    except (ValueError, FileExistsError, ImportError) as e:  # bad folder / pool / repo id: the user's to fix
        print(f'error: {e}', file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - offline, no network, the Hub refused: one line; anything else raises
        err = hub_error(e, f'pushing {args.folder} to {args.repo}',
                        'write the files with --stage-only DIR now and upload DIR later')
        if err is None:
            raise
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'pushed {args.folder} to {args.repo}: {getattr(info, "commit_url", None) or info}')
    return 0


def console() -> None:
    """The ``timm-learngene`` console script."""
    sys.exit(main())


if __name__ == '__main__':
    console()
