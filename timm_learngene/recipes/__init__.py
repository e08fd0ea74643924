"""The recipes: each module is one job with an option table (``OPTIONS``), ``parse_args(argv) -> cfg``,
``run(cfg)`` and ``main(argv=None) = run(parse_args(argv))``. ``recipes/*.py`` in the checkout are their
launchers (``accelerate launch recipes/distill.py ...``); the pipeline calls ``run(cfg)`` of each stage.

    train_vit       a plain timm ViT trained on labels (the ancestry, SN-Net anchors, direct students)
    train_nested    a nested pool: one ViT whose width slices are models of their own (issue 28)
    distill         ancestry -> every member of a learngene pool, one pass
    finetune        stitch-layer init + joint finetuning of every descendant (also SN-Net from anchors)
    evaluate        top-1/top-5, params, GMACs, throughput and latency of every descendant
    pipeline        the whole job on real data, one command (presets demo, replication)
    describe_pool   a pool's descendants as a Markdown table, from its spec alone
    screen          candidate pools against the replication's pool and direct students (issue 28)
    stitch_init_accuracy  every descendant's validation top-1 right after each stitch init

Every option of every recipe: docs/options.md (``python -m timm_learngene.recipes.options_doc``).
"""

RECIPES = ('train_vit', 'train_nested', 'distill', 'finetune', 'evaluate', 'pipeline', 'describe_pool', 'screen',
           'stitch_init_accuracy')
