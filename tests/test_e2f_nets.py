"""Renderer building blocks: masks, the FIA renderer and its variants, VGG19 loading, PatchGAN."""

import math

import pytest
import torch

from realtalk_cli.errors import RealtalkError
from realtalk_cli.face.model import GROUP_NAMES, FaceModel
from realtalk_cli.nets.discriminator import DiscriminatorConfig, PatchDiscriminator
from realtalk_cli.nets.mask import MaskConfig, keep_mask, learnable_region, polygon_fill, teeth_mask
from realtalk_cli.nets.renderer import ALIGN_KINDS, Renderer, RendererConfig
from realtalk_cli.nets.vgg import PerceptualLoss, VGG19Features

S = 64


def tiny_renderer(**kw) -> Renderer:
    cfg = dict(image_size=S, coeff_dim=10, channels=[8, 16, 16, 32, 32], heads=2, mlp_dim=16, head_channels=8)
    return Renderer(RendererConfig(**{**cfg, **kw}))


def synthetic_face(crop: int = 128) -> FaceModel:
    """A cartoon face: jaw contour (cheek to cheek round the chin), an inner-mouth ring and two eyes.

    Expression 0 opens the jaw: jaw points and the lower half of the mouth ring move down in
    proportion to how far below the cheek line they sit, as a real jaw rotates about the ears.
    """
    c, y0, depth, drop = crop / 2, crop / 2 - 10, 40.0, 12.0  # centre, cheek line, cheek-to-chin, jaw drop
    jaw = [(c + 36 * math.cos(t), y0 + depth * math.sin(t)) for t in torch.linspace(0, math.pi, 15).tolist()][::-1]
    mouth = [(c + 10 * math.cos(t), y0 + 22 + 2 * math.sin(t)) for t in torch.linspace(0, 2 * math.pi, 13)[:-1].tolist()]
    eyes = [(c - 15, c - 30), (c + 15, c - 30)]
    pts = torch.tensor(jaw + mouth + eyes)
    mean = torch.cat([pts, torch.zeros(len(pts), 1)], 1)
    open_jaw = torch.zeros_like(mean)
    open_jaw[:, 1] = drop * (pts[:, 1] - y0).clamp_min(0) / depth  # 0 at the cheek line, `drop` at the chin
    mouth_idx = torch.arange(15, 27)
    lower_lip = mouth_idx[pts[mouth_idx, 1] > y0 + 22]
    open_jaw[mouth_idx, 1] = 0.0  # the upper lip stays with the skull ...
    open_jaw[lower_lip, 1] = 0.6 * drop  # ... the lower lip rides with the jaw: the mouth opens
    groups = {name: torch.arange(len(pts)) for name in GROUP_NAMES}  # groups the mask does not use
    groups |= {
        "jaw": torch.arange(15), "mask_contour": torch.arange(1, 14), "mouth": mouth_idx, "lips_inner": mouth_idx,
        "lips_outer": mouth_idx, "mouth_region": mouth_idx, "keypoints": torch.arange(29),
        "keypoint_landmarks": torch.arange(29),
    }
    return FaceModel("landmark", mean, torch.zeros(1, len(pts), 3), open_jaw[None], groups, torch.tensor([[18, 24]]), crop)


def face_points(fm: FaceModel, jaw_open: float) -> torch.Tensor:
    rho = torch.zeros(1, 6)
    return fm.project(fm.vertices(torch.zeros(1, 1), torch.tensor([[jaw_open]]), rho))


def test_polygon_fill_square_area_and_exact_outside():
    square = torch.tensor([[[10.0, 10.0], [50.0, 10.0], [50.0, 40.0], [10.0, 40.0]]])
    m = polygon_fill(square, S, S, feather=4.0)
    assert abs(m.sum().item() - 40 * 30) < 40  # soft band is symmetric about the edge
    assert m[0, 0, 25, 30] == 1 and m[0, 0, 5, 5] == 0 and m[0, 0, 25, 55] == 0
    assert 0 < m[0, 0, 10, 30] < 1  # on the edge: in the feathered band
    # reversed point order (clockwise vs counter-clockwise) gives the same fill
    assert torch.allclose(m, polygon_fill(square.flip(1), S, S, feather=4.0))


def test_polygon_fill_coarse_grid_matches_exact_fill():
    t = torch.linspace(0, 2 * math.pi, 41)[:-1]
    ellipse = torch.stack([128 + 60 * t.cos(), 128 + 80 * t.sin()], -1)[None]
    exact = polygon_fill(ellipse, 256, 256, feather=5.0, grid=256)  # every pixel
    coarse = polygon_fill(ellipse, 256, 256, feather=5.0)  # 4x4 blocks, upsampled
    assert (exact - coarse).abs().max() < 0.1 and (exact - coarse).abs().mean() < 1e-3
    assert ((exact == 0) ^ (coarse == 0)).sum() < 256  # nearly the same support: a ring of a few pixels at most


def test_learnable_mask_lies_on_lower_face_and_follows_the_jaw():
    fm, cfg = synthetic_face(128), MaskConfig(neck_extend=0.35)
    closed, opened = face_points(fm, 0.0), face_points(fm, 1.0)
    contour = fm.groups["mask_contour"]
    r_closed = learnable_region(closed, contour, 128, cfg)[0, 0]
    r_open = learnable_region(opened, contour, 128, cfg)[0, 0]
    c, y0 = 64, 54  # centre column, cheek line (see synthetic_face)
    assert r_closed[y0 + 22, c] == 1  # mouth
    assert r_closed[y0 + 38, c] == 1  # chin
    assert r_closed[y0 + 40 + 6, c] == 1  # extended under the chin (35% of ~31 px below the cheek line)
    assert r_closed[y0 + 40 + 18, c] == 0  # ... but not further
    assert r_closed[c - 30, c - 15] == 0 and r_closed[5, c] == 0  # eyes, forehead
    assert r_closed[y0 + 22, 10] == 0  # background beside the face
    lowest = lambda r: r.sum(1).nonzero().max().item()
    assert lowest(r_open) > lowest(r_closed) + 10  # an open jaw pushes the region down
    assert r_open.sum() > 1.15 * r_closed.sum()
    keep = keep_mask(closed, fm.groups, 128, cfg)
    assert torch.equal(keep[0, 0], 1 - r_closed)


def test_teeth_mask_opens_with_the_mouth():
    fm, cfg = synthetic_face(128), MaskConfig(teeth_dilate=0.0)
    closed = teeth_mask(face_points(fm, 0.0), fm.groups["mouth"], 128, cfg)
    opened = teeth_mask(face_points(fm, 1.0), fm.groups["mouth"], 128, cfg)
    assert set(opened.unique().tolist()) <= {0.0, 1.0}
    assert opened.sum() > 3 * closed.sum() and opened[0, 0, 54 + 25, 64] == 1
    dilated = teeth_mask(face_points(fm, 1.0), fm.groups["mouth"], 128, MaskConfig(teeth_dilate=0.03))
    assert dilated.sum() > opened.sum()


def test_lower_half_mask():
    keep = keep_mask(None, {}, S, MaskConfig(kind="lower_half"), batch=2)
    assert keep.shape == (2, 1, S, S)
    assert keep[:, :, : S // 2].eq(1).all() and keep[:, :, S // 2 :].eq(0).all()


def test_renderer_output_equals_source_outside_mask():
    torch.manual_seed(0)
    net = tiny_renderer().eval()
    src, ref = torch.rand(2, 3, S, S), torch.rand(2, 3, S, S)
    keep = 1 - polygon_fill(torch.tensor([[[16.0, 30], [48, 30], [48, 60], [16, 60]]]).repeat(2, 1, 1), S, S, 3.0)
    with torch.no_grad():
        out = net(src, ref, torch.randn(2, 10), keep)
    outside = keep == 1
    assert torch.equal(out.expand_as(src)[outside.expand_as(src)], src[outside.expand_as(src)])
    inside = (keep == 0).expand_as(src)
    assert (out[inside] - src[inside]).abs().mean() > 0.05  # the hole is generated, not copied


# the Table 7 rows: every alignment module, and 1 / 2 / 3 residual blocks for the attention FIA
@pytest.mark.parametrize("align,blocks", [(a, 2) for a in ALIGN_KINDS] + [("attention", 1), ("attention", 3)])
def test_alignment_variants_forward_backward(align, blocks):
    torch.manual_seed(0)
    net = tiny_renderer(align=align, fia_blocks=blocks)
    src, ref = torch.rand(2, 3, S, S), torch.rand(2, 3, S, S)
    keep = torch.ones(2, 1, S, S)
    keep[:, :, S // 2 :] = 0
    out = net(src, ref, torch.randn(2, 10), keep)
    out.sum().backward()
    aligned = [b.align for b in net.decoder if b.align is not None]
    assert len(aligned) == 2  # 1/16 and 1/8 only
    for module in aligned:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_fia_block_count_scales_parameters():
    n = [sum(p.numel() for p in tiny_renderer(fia_blocks=b).parameters()) for b in (1, 2, 3)]
    assert n[0] < n[1] < n[2] and n[2] - n[1] == n[1] - n[0]


def test_renderer_rejects_bad_configs():
    with pytest.raises(ValueError):
        RendererConfig(coeff_dim=4, align="optical")
    with pytest.raises(ValueError):
        RendererConfig(coeff_dim=4, image_size=100)
    with pytest.raises(ValueError):
        Renderer(RendererConfig(coeff_dim=0))


def _torchvision_layout_state() -> dict:
    """What `torchvision.models.vgg19().state_dict()` holds: features.* convs and a classifier."""
    torch.manual_seed(1)
    ref = VGG19Features()
    state = {k: torch.randn_like(v) * 0.05 for k, v in ref.state_dict().items()}
    state.update({"features.34.weight": torch.randn(512, 512, 3, 3), "features.34.bias": torch.randn(512),
                  "classifier.0.weight": torch.randn(8, 8), "classifier.0.bias": torch.randn(8)})
    return state


def test_vgg19_loads_torchvision_state_dict(tmp_path):
    state = _torchvision_layout_state()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = VGG19Features.from_file(path)
    assert torch.equal(vgg.features[28].weight, state["features.28.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 32, 32)
    feats = vgg(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    loss = PerceptualLoss(vgg)
    assert loss(x, x).item() == 0 and loss(x, torch.rand_like(x)).item() > 0


def test_vgg19_rejects_bad_files(tmp_path):
    with pytest.raises(RealtalkError, match="not found"):
        VGG19Features.from_file(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(RealtalkError, match="VGG19"):
        VGG19Features.from_file(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RealtalkError, match="cannot read"):
        VGG19Features.from_file(junk)


def test_patch_discriminator_scores_patches():
    d = PatchDiscriminator(DiscriminatorConfig(channels=8, layers=3))
    logits = d(torch.rand(2, 3, 64, 64))
    assert logits.shape[0] == 2 and logits.shape[1] == 1 and logits.shape[-1] > 1  # a map, not one score
