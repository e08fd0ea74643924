"""Members initialised from the ancestry by weight selection (timm_learngene/weight_selection.py)."""
import pytest
import timm
import torch

from timm_learngene import MemberSpec, PoolSpec
from timm_learngene.errors import PoolSpecError
from timm_learngene.weight_selection import evenly_spaced, init_members_from_ancestry, select_member_weights

from conftest import IMG, PATCH


def _ancestry(width=48, depth=4, heads=3, classes=5):
    torch.manual_seed(0)
    m = timm.create_model('vit_tiny_patch16_224', embed_dim=width, depth=depth, num_heads=heads, img_size=IMG,
                          patch_size=PATCH, num_classes=classes).eval()
    with torch.no_grad():  # zero-init biases would hide a bias that is not copied
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def _pool(*members, classes=5):
    spec = PoolSpec('ws', tuple(MemberSpec(n, w, h, d) for n, w, h, d in members), img_size=IMG, patch_size=PATCH,
                    num_classes=classes)
    return timm.create_model('learngene_pool', pool=spec).eval()


def test_evenly_spaced():
    assert evenly_spaced(3, 12).tolist() == [0, 4, 8]
    assert evenly_spaced(4, 6).tolist() == [0, 1, 3, 4]
    assert evenly_spaced(5, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(PoolSpecError, match='at most as wide'):
        evenly_spaced(7, 6)


def test_a_member_of_the_ancestrys_shape_is_the_ancestry():
    anc = _ancestry()
    pool = _pool(('tiny', 16, 1, 4), ('base', 48, 3, 4))
    init_members_from_ancestry(pool, anc)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(pool(x, [('base', 0, 4)]), anc(x), rtol=0, atol=0)


def test_selection_takes_evenly_spaced_blocks_channels_heads_and_units():
    anc = _ancestry(width=48, depth=8, heads=3)
    pool = _pool(('tiny', 16, 1, 4), ('base', 32, 2, 4))
    sd = select_member_weights(pool.members['tiny'], anc)
    a = anc.state_dict()
    e = torch.arange(16) * 3  # 16 of 48 channels
    heads = torch.cat([torch.arange(16)])  # head 0 of 3 (16 dims each), all its dims
    assert torch.equal(sd['blocks.0.norm1.weight'], a['blocks.1.norm1.weight'][e])  # blocks 1, 3, 5, 7 of 8
    assert torch.equal(sd['blocks.3.mlp.fc2.bias'], a['blocks.7.mlp.fc2.bias'][e])
    qkv = torch.cat([heads, heads + 48, heads + 96])
    assert torch.equal(sd['blocks.0.attn.qkv.weight'], a['blocks.1.attn.qkv.weight'][qkv][:, e])
    assert torch.equal(sd['blocks.0.attn.proj.weight'], a['blocks.1.attn.proj.weight'][e][:, heads])
    h = torch.arange(64) * 3  # 64 of 192 MLP units
    assert torch.equal(sd['blocks.0.mlp.fc1.weight'], a['blocks.1.mlp.fc1.weight'][h][:, e])
    assert torch.equal(sd['pos_embed'], a['pos_embed'][..., e]) and torch.equal(sd['head.bias'], a['head.bias'])
    assert torch.equal(sd['patch_embed.proj.weight'], a['patch_embed.proj.weight'][e])
    # two heads of three: heads 0 and 1 (0 * 3 // 2, 1 * 3 // 2)
    sd = select_member_weights(pool.members['base'], anc)
    two = torch.cat([torch.arange(16), 16 + torch.arange(16)])
    assert torch.equal(sd['blocks.2.attn.proj.weight'], a['blocks.5.attn.proj.weight'][torch.arange(32) * 3 // 2][:, two])


def test_other_classes_keep_the_built_head_and_bad_shapes_fail_before_any_copy():
    anc = _ancestry(classes=7)
    pool = _pool(('tiny', 16, 1, 4), ('base', 48, 3, 4))
    head = pool.members['tiny'].head.weight.clone()
    init_members_from_ancestry(pool, anc)
    assert torch.equal(pool.members['tiny'].head.weight, head)
    pool = _pool(('tiny', 16, 1, 4), ('base', 64, 4, 4))  # wider than the ancestry
    before = {k: v.clone() for k, v in pool.state_dict().items()}
    with pytest.raises(PoolSpecError, match='at most as wide|cannot take heads'):
        init_members_from_ancestry(pool, _ancestry())
    assert all(torch.equal(v, pool.state_dict()[k]) for k, v in before.items())
    with pytest.raises(PoolSpecError, match='depth 6 cannot take blocks of an ancestry of depth 4'):
        select_member_weights(_pool(('tiny', 16, 1, 6), ('base', 48, 3, 6)).members['tiny'], _ancestry())
    with pytest.raises(PoolSpecError, match='timm VisionTransformer'):
        select_member_weights(pool.members['tiny'], torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_distill_recipe_starts_members_from_the_ancestry(tmp_path):
    from timm_learngene.recipes import distill
    from timm_learngene.spec import DistillSpec
    anc = _ancestry(width=48, depth=4, heads=3, classes=10)
    timm.models.save_for_hf(anc, tmp_path / 'anc', safe_serialization=True)
    spec = PoolSpec('ws', (MemberSpec('tiny', 16, 1, 2), MemberSpec('base', 48, 3, 2)), img_size=IMG,
                    patch_size=PATCH, num_classes=10, distill=DistillSpec('anc', 48, 4, (0, 1), (1, 3)))
    args = ['--pool', spec.to_json(), '--dataset', 'synthetic', '--max-steps', '0', '--epochs', '0',
            '--teacher', 'vit_tiny_patch16_224', '--teacher-checkpoint', str(tmp_path / 'anc'),
            '--member-init', 'weight_selection', '--output', str(tmp_path / 'out'), '--cpu', '--batch-size', '2',
            '--num-workers', '0']
    pool = distill.main(args)
    assert torch.equal(pool.members['base'].blocks[1].attn.qkv.weight, anc.blocks[3].attn.qkv.weight)
