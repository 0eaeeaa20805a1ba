"""Clip transforms: one draw per clip, flip label swaps, crop geometry and shapes, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tanet.data import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _clip(t=4, h=60, w=80, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return T.clip_from_frames(rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8))  # (T,C,H,W)


def test_clip_from_frames_is_a_view():
    a = np.zeros((2, 5, 6, 3), np.uint8)
    c = T.clip_from_frames(a)
    assert c.shape == (2, 3, 5, 6)
    a[1, 2, 3, 0] = 7
    assert int(c[1, 0, 2, 3]) == 7
    with pytest.raises(ValueError, match="uint8"):
        T.clip_from_frames(a.astype(np.float32))


def test_same_crop_and_flip_for_every_frame():
    """A clip whose frames are identical stays identical after augmentation."""
    frame = _clip(1)
    clip = frame.expand(6, -1, -1, -1)  # (6, C, H, W), same frame 6 times
    tf = T.build_train_transform(size=32, mean=MEAN, std=STD)
    for seed in range(20):
        out, _ = tf(clip, 0, torch.Generator().manual_seed(seed))
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
        assert torch.equal(out, out[:1].expand_as(out))


def test_multi_scale_crop_params_are_the_authors_grid():
    # base 256: 256, 224, 192, 168; 224 is within 3 px of the input size and snaps to it
    base = [256, 224, 192, 168]
    seen = set()
    for seed in range(300):
        top, left, ch, cw = T.multi_scale_crop_params(256, 340, 224,
                                                      generator=torch.Generator().manual_seed(seed))
        seen.add((ch, cw))
        assert (left, top) in T.fixed_crop_offsets(340, 256, cw, ch, more=True)
    expected = {(base[i], base[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    assert seen == expected  # max distortion 1: neighbouring scales only


def test_flip_swaps_labels_both_ways_and_only_when_flipped():
    clip = _clip()
    tf = T.build_train_transform(size=32, mean=MEAN, std=STD, flip_label_map={3: 4}, scales=(1,))
    labels = {3: set(), 4: set(), 7: set()}
    for seed in range(40):
        for lab in labels:
            out, new = tf(clip, lab, torch.Generator().manual_seed(seed))
            ref, _ = T.build_train_transform(size=32, mean=MEAN, std=STD, flip=False,
                                             scales=(1,))(clip, lab,
                                                          torch.Generator().manual_seed(seed))
            flipped = not torch.equal(out, ref)
            if flipped:
                assert torch.equal(out, ref.flip(-1))
            expect = {3: 4, 4: 3}.get(lab, lab) if flipped else lab
            assert new == expect
            labels[lab].add(new)
    assert labels[3] == {3, 4} and labels[4] == {3, 4} and labels[7] == {7}


def test_no_flip_keeps_orientation():
    clip = _clip()  # 60 x 80: 60 x 60 crops at the 13 fixed offsets
    tf = T.build_train_transform(size=32, mean=MEAN, std=STD, flip=False, scales=(1,))
    crops = [T.normalize(T.resize(T.crop(clip, oh, ow, 60, 60), (32, 32)), MEAN, STD)
             for ow, oh in T.fixed_crop_offsets(80, 60, 60, 60)]
    for s in range(30):
        out, _ = tf(clip, 0, torch.Generator().manual_seed(s))
        assert any(torch.equal(out, c) for c in crops)
        assert not any(torch.equal(out, c.flip(-1)) for c in crops)


@pytest.mark.parametrize("crops,views", [(1, None), (3, 3), (10, 10)])
def test_test_transform_shapes(crops, views):
    tf = T.build_test_transform(size=32, mean=MEAN, std=STD, short_side=40, crops=crops)
    out, label = tf(_clip(), 5)
    shape = (4, 3, 32, 32) if views is None else (views, 4, 3, 32, 32)
    assert out.shape == shape and out.dtype == torch.float32 and label == 5


def test_three_and_ten_crop_positions():
    clip = _clip(2, 40, 80)
    three = T.three_crop(clip, 40)  # (3, T, C, 40, 40): left, right, centre
    assert torch.equal(three[0], clip[..., 0:40])
    assert torch.equal(three[1], clip[..., 40:80])
    assert torch.equal(three[2], clip[..., 20:60])
    ten = T.ten_crop(clip, 20)
    assert ten.shape == (10, 2, 3, 20, 20)
    assert torch.equal(ten[0], clip[..., 0:20, 0:20]) and torch.equal(ten[1], ten[0].flip(-1))
    assert torch.equal(ten[8], clip[..., 10:30, 30:50])  # centre, then its mirror
    tall = T.three_crop(_clip(1, 80, 40), 40)
    assert torch.equal(tall[0], _clip(1, 80, 40)[..., 0:40, :])


def test_resize_short_side_and_center_crop():
    clip = _clip(2, 60, 80)
    r = T.resize_short_side(clip, 30)
    assert r.shape == (2, 3, 30, 40) and r.dtype == torch.uint8
    assert T.center_crop(r, 30).shape == (2, 3, 30, 30)
    assert T.center_crop(_clip(1, 10, 12), 16).shape == (1, 3, 16, 16)  # too small: upscaled
    with pytest.raises(ValueError, match="outside"):
        T.crop(clip, 50, 0, 20, 20)


def test_normalize_values_and_scales():
    clip = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = T.normalize(clip, MEAN, STD)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)]))
    out255 = T.normalize(clip, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], value_scale=1)
    assert torch.allclose(out, out255, atol=1e-4)
    assert out.is_contiguous()


def test_bad_crops():
    with pytest.raises(ValueError, match="1, 3 or 10"):
        T.build_test_transform(size=32, mean=MEAN, std=STD, crops=5)
