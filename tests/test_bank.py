"""The frame-bank renderer: warp, fill, retrieval, bank build/reload, composition and a whole dub."""

import json
import shutil

import cv2
import numpy as np
import pytest

from mediagen import make_face_video
from realtalk_cli.bank.retrieve import RetrievalConfig, best_path, match_costs, planned_path, sources_per_frame, with_motion
from realtalk_cli.bank.warp import anchors, fill_smooth, register_maps, resample, triangulate, warp



def textured(size=160):
    skimage = pytest.importorskip("skimage")
    return cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def test_warp_follows_a_known_displacement():
    """Points moved by a known affine map: the piecewise-affine warp equals OpenCV's warp of that map."""
    img = textured()
    rng = np.random.default_rng(0)
    pts = rng.uniform(40, 120, (60, 2))
    src = np.vstack([pts, anchors(pts)])
    m = np.array([[1.05, 0.08, -6.0], [-0.04, 0.97, 4.0]])  # where each source point lands
    dst = src @ m[:, :2].T + m[:, 2]
    got = warp(img, dst, src, triangulate(src), (0, 0, 160, 160))
    want = cv2.warpAffine(img, m, (160, 160), flags=cv2.INTER_CUBIC)
    inner = np.zeros((160, 160), bool)
    inner[50:110, 50:110] = True  # well inside the points' hull
    err = np.abs(got.astype(int) - want)[inner]
    assert err.mean() < 0.1 and np.percentile(err, 99) <= 1  # OpenCV's 1/32-pixel steps differ at a few edges
    # a different displacement gives a clearly different image: the test can fail
    other = warp(img, src + 5, src, triangulate(src), (0, 0, 160, 160))
    assert np.abs(other.astype(int) - want)[inner].mean() > 10


def test_fill_smooth_interpolates_border_values():
    values = np.zeros((90, 120, 3), np.float32)
    weights = np.zeros((90, 120), np.float32)
    weights[:4], values[:4] = 1, 10.0
    weights[-4:], values[-4:] = 1, -10.0
    f = fill_smooth(values, weights)
    assert abs(f[2, 60, 0] - 10) < 0.5 and abs(f[-2, 60, 0] + 10) < 0.5
    col = f[:, 60, 0]
    assert np.all(np.diff(col[5:-5]) < 0)  # monotone between the two borders
    assert abs(col[45]) < 1.0  # the middle is the average of the two sides


def test_register_maps_lines_up_the_known_part_and_keeps_the_still_part():
    """A warp that lands 3 px left and 2 px up of where the target shows the image: registration on the
    upper half (known) corrects it there, while the still block keeps the warp's own placement."""
    img = textured()
    h, w = 160, 160
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    target = resample(img, xs - 3, ys - 2)  # the image moved right 3 and down 2
    known = np.zeros((h, w), bool)
    known[10:70, 10:150] = True
    still = np.zeros((h, w), bool)
    still[110:150, 60:100] = True
    map_x, map_y = register_maps(img, xs, ys, target, known, still)  # the identity warp, refined
    core = np.zeros((h, w), bool)
    core[25:55, 25:135] = True  # inside the known area, away from its edges
    assert np.abs(map_x - (xs - 3))[core].mean() < 0.5 and np.abs(map_y - (ys - 2))[core].mean() < 0.5
    assert np.abs(resample(img, map_x, map_y).astype(int) - target)[core].mean() < 3
    assert np.abs(img.astype(int) - target)[core].mean() > 10  # before registration it was clearly off
    inner = np.zeros((h, w), bool)
    inner[116:144, 66:94] = True  # the still block less a cell of the fill's grid (it is solved coarse)
    assert np.abs(map_x - xs)[inner].max() < 0.05 and np.abs(map_y - ys)[inner].max() < 0.05
    # a known area a few pixels high (a small face) is flowed in a window grown around it (DIS crashes
    # on tiny images); a box too small for any flow is left as it is
    thin = np.zeros((h, w), bool)
    thin[30:33, 20:140] = True
    map_x, _ = register_maps(img, xs, ys, target, thin, still)
    assert abs(np.median(map_x[30:33, 40:120] - xs[30:33, 40:120]) + 3) < 1
    small = register_maps(img[:20, :20], xs[:20, :20], ys[:20, :20], target[:20, :20], known[:20, :20], still[:20, :20])
    assert np.array_equal(small[0], xs[:20, :20])


def test_retrieval_prefers_a_stable_path():
    """Two candidates whose costs alternate by a small noise: the path stays on one instead of
    switching every frame; a large, lasting change does make it switch."""
    rng = np.random.default_rng(0)
    T = 60
    costs = np.full((T, 4), 10.0)
    costs[:, 0] = 1.0 + 0.2 * rng.standard_normal(T)
    costs[:, 1] = 1.0 + 0.2 * rng.standard_normal(T)
    costs[40:, 2] = -5.0  # from frame 40, frame 2 is much better
    no_successor = np.full(4, -1)
    cfg = RetrievalConfig(candidates=4, switch_cost=1.5, hold_cost=0.1)
    path = best_path(costs, no_successor, cfg)
    # block by block (as a live stream plans) the path is as stable
    blocks = planned_path(costs, no_successor, cfg)
    assert (np.diff(blocks[:40]) != 0).sum() <= 1 and (blocks[44:] == 2).all()
    assert len(set(path[:40].tolist())) == 1
    assert (path[40:] == 2).all()
    greedy = costs.argmin(1)
    assert (np.diff(greedy[:40]) != 0).sum() > 10  # the greedy choice would flicker


def test_retrieval_plays_the_bank_on_and_crossfades():
    """A chain 0->1->2->3 matches the target exactly: the path follows it (free); a jump fades the old
    source out over the cross-fade frames with weights that sum to one."""
    T, K = 8, 10
    costs = np.full((T, K), 3.0)
    for t in range(4):
        costs[t, t] = 0.0
    for t in range(4, 8):
        costs[t, 6] = 0.0
    successor = np.array([1, 2, 3, 4, 5, -1, 7, 8, 9, -1])
    cfg = RetrievalConfig(candidates=3, switch_cost=1.0, hold_cost=0.5, crossfade=2)
    path = best_path(costs, successor, cfg)
    assert path.tolist() == [0, 1, 2, 3, 6, 6, 6, 6]  # plays on for free, then jumps once and holds
    sources = sources_per_frame(np.array([0, 1, 2, 3, 7, 8, 9, 9]), successor, crossfade=2)
    assert sources[0] == [(0, 1.0)]
    assert [k for k, _ in sources[4]] == [7, 4] and [k for k, _ in sources[5]] == [8, 5]
    for s in sources:
        assert abs(sum(w for _, w in s) - 1) < 1e-9


def test_retrieval_matches_how_the_lips_move():
    """Two bank frames of one lip shape, one opening and one closing: an opening target costs less on
    the opening one, and the same motion at 50 fps (half the change per frame) costs the same."""
    shape, smaller, larger = np.array([[1.0, 2.0]]), np.array([[0.8, 1.8]]), np.array([[1.2, 2.2]])
    bank = np.vstack([with_motion(shape, smaller, [1], 1.0), with_motion(shape, larger, [1], 1.0)])
    pose, cfg = np.zeros((2, 6)), RetrievalConfig()
    at25 = match_costs(with_motion(shape, smaller, [1], 1.0), bank, pose[:1], pose, 1.0, cfg)
    at50 = match_costs(with_motion(shape, (shape + smaller) / 2, [0.5], 1.0), bank, pose[:1], pose, 1.0, cfg)
    assert at25[0, 0] < 1e-9 < at25[0, 1]
    np.testing.assert_allclose(at50, at25, atol=1e-9)
    shape_only = match_costs(shape, shape.repeat(2, 0), pose[:1], pose, 1.0, cfg)
    assert shape_only[0, 0] == shape_only[0, 1]  # without motion the two cannot be told apart


def test_live_plan_block_by_block_is_the_offline_plan(bank_model):
    """A stream prepares 8 frames at a time (resume=True): it picks the bank frames one offline plan
    of the whole output picks, motion term included (weighted up so that it decides)."""
    from realtalk_cli.bank.compose import BankRenderer
    from realtalk_cli.bank.store import FrameBank
    from realtalk_cli.inference.render_stage import BankStage

    bank = FrameBank(bank_model / "model" / "bank")
    rng = np.random.default_rng(1)
    order = np.r_[np.arange(len(bank)), np.arange(len(bank))[::-1], rng.permutation(len(bank))][:40]
    beta = bank.beta[order] + 0.01 * rng.standard_normal((len(order), bank.beta.shape[1])).astype(np.float32)
    track = type("Track", (), {"alpha": bank.alpha, "rho": bank.rho[order % len(bank)]})()
    src = np.arange(len(order))
    cfg = RetrievalConfig(motion=20.0)
    offline, live = BankStage(BankRenderer(bank, cfg)), BankStage(BankRenderer(bank, cfg))
    offline.prepare(track, beta, src)
    blocks = []
    for a in range(0, len(order), 8):
        live.prepare(track, beta[a:a + 8], src[a:a + 8], resume=a > 0)
        blocks += live.sources
    assert blocks == offline.sources


def test_bank_build_and_reload(bank_model):
    from realtalk_cli.bank.store import FrameBank
    from realtalk_cli.data.dataset import Dataset

    bank = FrameBank(bank_model / "model" / "bank")
    clip = Dataset.open(bank_model / "data").clips()[0]
    assert len(bank) == int(clip.valid().sum())  # short video: every tracked frame is kept
    np.testing.assert_allclose(bank.beta, clip.coeffs()["beta"][clip.valid()], atol=1e-6)
    crop = bank.crop(3)
    assert crop.dtype == np.uint8 and crop.std() > 5
    # the bank keeps the source frame's own pixels around the face, not the dataset's 64 px crops
    from realtalk_cli.bank.store import face_box
    from realtalk_cli.media import VideoReader

    x0, y0, x1, y1 = face_box(clip.transforms()[3], clip.crop_size, 192, 160)
    assert crop.shape == (y1 - y0, x1 - x0, 3) and min(crop.shape[:2]) > 64
    frame = list(VideoReader(bank_model / "person.mp4", start=3, stop=4))[0]
    assert np.abs(crop.astype(int) - frame[y0:y1, x0:x1]).mean() < 3  # JPEG q95 of the same pixels
    assert (bank.successor()[:-1] == np.arange(1, len(bank))).all() and bank.successor()[-1] == -1


def test_bank_subsamples_a_long_video(bank_model, tmp_path):
    from realtalk_cli.bank.store import BankConfig, FrameBank, build_bank

    bank = FrameBank(build_bank(bank_model / "data", tmp_path / "small", BankConfig(max_frames=20)))
    assert 17 <= len(bank) <= 20 and json.loads((tmp_path / "small" / "config.json").read_text())["stride"] == 3


def test_compose_changes_only_the_region(bank_model):
    """Rendering a frame from another bank frame: pixels outside the paste mask are the source's, bit
    for bit; inside, the mouth region changed; driven by the frame's own expression from its own bank
    frame, the result is close to the frame itself."""
    from realtalk_cli.bank.compose import BankRenderer
    from realtalk_cli.bank.store import FrameBank
    from realtalk_cli.data.dataset import Dataset
    from realtalk_cli.media import VideoReader

    bank = FrameBank(bank_model / "model" / "bank")
    r = BankRenderer(bank)
    clip = Dataset.open(bank_model / "data").clips()[0]
    t = 10
    frame = list(VideoReader(bank_model / "person.mp4", start=t, stop=t + 1))[0]
    a = clip.transforms()[t]
    same, paste = r.compose(frame, a, bank.alpha, bank.beta[t], bank.beta[t], bank.rho[t], [(t, 1.0)])
    m = paste.mask(*frame.shape[:2])
    assert (m > 0.5).sum() > 200
    assert np.array_equal(same[m == 0], frame[m == 0])
    err = np.abs(same.astype(float) - frame)[m > 0.5].mean()
    assert err < 6, err  # its own frame, re-warped onto itself
    far = int(np.argmax(np.abs(bank.beta - bank.beta[t]).sum(1)))
    other, paste = r.compose(frame, a, bank.alpha, bank.beta[far], bank.beta[t], bank.rho[t], [(far, 1.0)])
    m = paste.mask(*frame.shape[:2])
    assert np.array_equal(other[m == 0], frame[m == 0])
    assert np.abs(other.astype(float) - frame)[m > 0.5].mean() > err  # another mouth was put there


def test_dub_with_the_bank_renderer(bank_model, tmp_path):
    from realtalk_cli.media import probe
    from realtalk_cli.pipelines.dub import DubOptions, Dubber

    speech = make_face_video(tmp_path / "speech.mp4", seconds=1.2)
    avatars = tmp_path / "avatars"
    dubber = Dubber.from_pretrained(bank_model / "model", "cpu", avatars=avatars)
    assert dubber.stage.name == "bank"  # the only renderer in the directory
    changed, frames = [], []

    def check(i, src, out, paste):
        m = paste.mask(*src.shape[:2])
        assert np.array_equal(src[m == 0], out[m == 0])
        changed.append(not np.array_equal(src, out))
        frames.append(out)

    result = dubber.dub(bank_model / "person.mp4", speech, tmp_path / "out.mp4", DubOptions(), on_frame=check)
    assert result.frames == 30 and sum(changed) > 20
    assert result.stages["track"] > 0 and list(avatars.glob("*.safetensors"))
    assert not (bank_model / "model" / "avatars").exists()  # the model directory, an input, is untouched
    # the prepared avatar: a second dub of the same video reads its track back instead of tracking
    second = []
    again = dubber.dub(bank_model / "person.mp4", speech, tmp_path / "again.mp4", DubOptions(),
                       on_frame=lambda i, src, out, paste: second.append(out))
    assert "track" not in again.stages and again.first_frame is not None
    assert all(np.array_equal(a, b) for a, b in zip(frames, second)) and len(second) == len(frames)
    info = probe(result.output)
    assert (info.width, info.height) == (192, 160) and abs(info.duration - 1.2) <= 0.04 + 1e-3
    # a model directory without a bank refuses the bank renderer with a clear message
    bare = tmp_path / "bare"
    shutil.copytree(bank_model / "model" / "a2e", bare / "a2e")
    from realtalk_cli.errors import RealtalkError

    with pytest.raises(RealtalkError, match="no bank/ inside"):
        Dubber.from_pretrained(bare, "cpu", renderer="bank")
