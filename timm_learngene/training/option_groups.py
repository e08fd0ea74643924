"""The option groups the recipes share, written once: data, model, optimization, augmentation, distillation, run.

A recipe's :class:`~timm_learngene.training.options.OptionTable` is the groups it uses (or a :func:`pick` of them)
plus its own options. Defaults here are the ImageNet (DeiT) recipe's; a recipe's table overrides those that differ.
"""
from typing import List

from ..data import BAD_IMAGES, DATASETS, PIN_MEMORY
from .options import DATASET, Option
from .precision import MIXED_PRECISION_CHOICES
from .progress import PROGRESS_CHOICES, TRACKERS

__all__ = ['DATA', 'MODEL', 'OPTIMIZATION', 'AUGMENTATION', 'DISTILLATION', 'RUN', 'INTERPOLATIONS', 'MIXED_PRECISION']

# timm's names for PIL / torchvision resize interpolation (timm.data.transforms.str_to_interp_mode). timm's
# 'random' is left out: the recipes use one interpolation for training crops and the evaluation resize, and
# timm's evaluation transform has no 'random'.
INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest', 'box', 'hamming', 'lanczos')
MIXED_PRECISION = MIXED_PRECISION_CHOICES  # launcher first (training.launch), then auto (training.setup)


DATA = (
    Option('dataset', DATASET, 'folder', 'where the images come from: folder (--data-dir with train/<class>/ and '
           'val/<class>/ image folders), fashion_mnist (the IDX files), hfds/NAME (a Hugging Face dataset, a Hub id '
           "or a local folder of data files, read by timm's reader; needs the datasets package), wds/NAME (webdataset "
           "tar shards under --data-dir with their _info.json, streamed by timm's reader; no --val-size; needs the "
           "webdataset package), synthetic (random "
           'tensors, for tests)', group='data', metavar='{' + ','.join(DATASETS) + ',hfds/NAME,wds/NAME}'),
    Option('data_dir', str, '', "the dataset's folder: DATA_DIR/train/<class>/*.jpg and DATA_DIR/val/<class>/*.jpg "
           "for folder; the IDX files for fashion_mnist ('' = Debian's dataset-fashion-mnist or the cached copy)",
           group='data'),
    Option('train_split', str, 'train', 'hfds/ and wds/ datasets: the split trained on (and --val-size held out of)',
           group='data'),
    Option('eval_split', str, 'validation', 'hfds/ and wds/ datasets: the split evaluated on (the test split)',
           group='data'),
    Option('train_limit', int, 0, 'train on the first N images of the training split (0 = all)', group='data'),
    Option('eval_limit', int, 0, 'evaluate on the first N images of the evaluation split (0 = all)', group='data'),
    Option('val_size', int, 0, 'training images held out as a validation split (0 = none): never trained on; every '
           'model choice (best descendant, Pareto front, select) is made on them, the test split only reports',
           group='data'),
    Option('val_seed', int, 0, 'seed of which training images are held out (independent of --seed, so every run '
           'and arm holds out the same images)', group='data'),
    Option('num_workers', int, 4, 'DataLoader worker processes per training process (0 = load in the process); '
           "kept alive across epochs. The training log's data_wait says whether they keep up (the fraction of time "
           'spent waiting for a batch)', group='data'),
    Option('pin_memory', str, 'auto', 'page-locked loader batches: auto (on when training on a CUDA GPU), on, off',
           choices=PIN_MEMORY, group='data'),
    Option('bad_images', str, 'error', 'an image that cannot be decoded (folder and hfds/NAME): error stops the run '
           'naming it; skip warns once per file and uses the next readable image', choices=BAD_IMAGES,
           group='data'),
)

MODEL = (
    Option('drop_path', float, 0.1, 'stochastic depth rate of the trained model', group='model'),
)

OPTIMIZATION = (
    Option('epochs', int, 100, 'training epochs (used when --max-steps is 0)', group='optimization'),
    Option('max_steps', int, 0, 'optimizer steps to run (0 = --epochs worth)', group='optimization'),
    Option('batch_size', int, 128, 'training images per process per forward pass (an optimizer step sees '
           'batch-size x grad-accum x processes)', group='optimization'),
    Option('eval_batch_size', int, 256, 'evaluation images per process per batch', group='optimization'),
    Option('grad_accum', int, 1, 'forward/backward passes accumulated into one optimizer step',
           group='optimization'),
    Option('opt', str, 'adamw', "optimizer, by timm's name (timm.optim.list_optimizers(), e.g. adamw, lamb, sgd)",
           group='optimization'),
    Option('lr', float, 5e-4, 'peak learning rate, reached at the end of the warm-up', group='optimization'),
    Option('weight_decay', float, 0.05, "weight decay (not on biases, norms and the model's no_weight_decay() "
           'parameters)', group='optimization'),
    Option('layer_decay', float, 0.0, 'layer-wise lr decay: each block nearer the input gets this factor more '
           "(0 = off; needs a model with timm's group_matcher: ViTs and descendants, not a whole pool)",
           group='optimization'),
    Option('warmup_frac', float, 0.0, "linear warm-up as a fraction of the run's optimizer steps (--max-steps "
           'included); when > 0 it replaces --warmup-epochs', group='optimization'),
    Option('warmup_epochs', float, 5.0, 'epochs of linear learning-rate warm-up (fractions allowed)',
           group='optimization'),
    Option('min_lr_ratio', float, 0.01, 'the cosine schedule ends at this fraction of --lr', group='optimization'),
    Option('clip_grad', float, 0.0, 'clip the global gradient norm to this value (0 = no clipping)',
           group='optimization'),
)

AUGMENTATION = (
    Option('mixup', float, 0.8, 'mixup alpha (0 = off)', group='augmentation'),
    Option('cutmix', float, 1.0, 'cutmix alpha (0 = off)', group='augmentation'),
    Option('smoothing', float, 0.1, 'label smoothing (with mixup or cutmix, applied to their mixed targets)',
           group='augmentation'),
    Option('aug_scale', List[float], [0.08, 1.0], 'random-resized-crop area range, MIN,MAX fractions of the image',
           group='augmentation'),
    Option('hflip', float, 0.5, 'probability of a horizontal flip', group='augmentation'),
    Option('color_jitter', float, 0.0, 'color jitter strength (0 = off; timm ignores it with --auto-augment, '
           'except 3a policies)', group='augmentation'),
    Option('auto_augment', str, 'rand-m9-mstd0.5-inc1', "timm RandAugment/AutoAugment policy, e.g. "
           "rand-m9-mstd0.5-inc1 ('' = off)", group='augmentation'),
    Option('re_prob', float, 0.25, 'random erasing probability', group='augmentation'),
    Option('crop_pct', float, 0.875, 'evaluation centre crop: resize to img_size / crop_pct, then crop img_size',
           group='augmentation'),
    Option('interpolation', str, 'bicubic', 'resize interpolation of the training crops and the evaluation resize',
           choices=INTERPOLATIONS, group='augmentation'),
)

DISTILLATION = (
    Option('teacher', str, '', 'the ancestry (teacher): a timm model name (pretrained from the Hub), '
           'local-dir:PATH or hf-hub:REPO', group='distillation'),
    Option('teacher_checkpoint', str, '', "the teacher's weights instead: a timm model folder (config.json + "
           "model.safetensors, which also gives the architecture) or a .safetensors file for --teacher's "
           'architecture', group='distillation'),
    Option('ce_weight', float, 0.5, 'weight of the cross-entropy loss on the labels', group='distillation'),
    Option('kd_weight', float, 0.5, "weight of the KD loss on the teacher's logits (0 = labels only, no teacher "
           'loaded)', group='distillation'),
    Option('temperature', float, 1.0, 'softmax temperature of the logit KD loss', group='distillation'),
)

RUN = (
    Option('output', str, 'out/run', 'output folder: config.yaml (the resolved options), log.jsonl, checkpoints/ '
           'and the result', group='run'),
    Option('resume', str, '', "continue the run whose checkpoints are under this folder, from its latest complete "
           "checkpoint (--output defaults to it; '' = start fresh)", group='run'),
    Option('seed', int, 0, 'seed of the model init, data order and augmentation', group='run'),
    Option('mixed_precision', str, 'auto', 'autocast precision (accelerate). Launcher first: this flag wins, else '
           "accelerate launch --mixed_precision or accelerate's config, else the YAML file's value or the default. "
           'auto probes fp32 and bf16 for a few steps of the actual model on this machine and keeps the faster (on '
           'CUDA: bf16 where supported). The resolved value is written to config.yaml, where it came from to '
           'launch.json, the probe to precision.json', choices=MIXED_PRECISION, group='run'),
    Option('cpu', bool, False, 'run on the CPU even when a GPU is available (this flag wins, else accelerate launch '
           "--cpu or accelerate's config, else the YAML file's value)", group='run'),
    Option('fused_attn', bool, True, "timm's fused attention (torch SDPA); its CPU backward is slow at small head "
           'dims', group='run'),
    Option('checkpoint_every', int, 1000, 'save a resumable checkpoint every N optimizer steps (0 = only at '
           '--stop-after)', group='run'),
    Option('keep_checkpoints', int, 2, 'complete checkpoints kept; older ones are deleted (0 = keep all)',
           group='run'),
    Option('log_every', int, 20, 'append the loss terms and lr to log.jsonl (and to the --log-with trackers; with '
           '--progress lines, print a progress line) every N optimizer steps', group='run'),
    Option('progress', str, 'auto', 'how training shows its progress: bar (tqdm), lines (a plain line every '
           '--log-every steps with loss, lr, img/s and the ETA, for log files), none, or auto (a bar when stdout and '
           'stderr are terminals, else lines)', choices=PROGRESS_CHOICES, group='run'),
    Option('log_with', List[str], [], "accelerate trackers that also get the loss terms, lr and evaluations, "
           f"comma-separated ({', '.join(TRACKERS)}); written under OUTPUT/trackers. tensorboard: pip install "
           "'timm-learngene[tensorboard]'", group='run'),
    Option('eval', bool, True, 'evaluate on the evaluation split at the end of every epoch and of the run',
           group='run'),
    Option('stop_after', int, 0, 'checkpoint and stop after N optimizer steps, for time-limited jobs; continue '
           'with --resume (0 = run to the end)', group='run'),
)
