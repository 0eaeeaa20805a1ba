"""The published checkpoints and class lists :mod:`tanet.models.hub` registers (data only).

Every URL, hash and figure below was copied from the publisher's own metadata, never typed from
memory; the comment above each group names the file and the commit it came from. mmaction2's
file names end in ``-<first 8 hex digits of the sha256>.pth`` (its
tools/deployment/publish_model.py), which is the hash checked on download. ``top1``/``top5``
are the publisher's reported accuracies (%); ``views``/``protocol`` how they were measured
(from the config's test pipeline). mmaction2 normalises 0-255 pixels: ``mean``/``std`` here are
its values / 255, for tanet's 0-1 pixels.
"""
from __future__ import annotations

from tanet.models.recognizer import IMAGENET_MEAN, IMAGENET_STD

_MM_STD = tuple(round(s / 255, 6) for s in (58.395, 57.12, 57.375))


def _mm_mean(b: float) -> tuple[float, float, float]:
    """mmaction2's mean (123.675, 116.28, b) / 255; b is 103.53, or 103.5 in 1.x's TANet."""
    return tuple(round(m / 255, 6) for m in (123.675, 116.28, b))  # type: ignore[return-value]


# Class lists: mmaction2's label maps (one name a line, index = line number - 1), pinned to the
# commit they were hashed at: open-mmlab/mmaction2 main @ 4d6c93474730cad2f25e51109adcf96824efc7a3
# (identical on branch 0.x @ 71a938ab; last changed in 430b0b66). sha256 computed from those blobs.
_MM_RAW = "https://raw.githubusercontent.com/open-mmlab/mmaction2/4d6c93474730cad2f25e51109adcf96824efc7a3"
CLASS_LISTS = [
    dict(name="kinetics400", url=f"{_MM_RAW}/tools/data/kinetics/label_map_k400.txt",
         sha256="e9f2806fe9109b851a80a74841244f6f8c9d10917fa0229cd82bab67f2f8e28f", count=400,
         file="kinetics400-e9f2806f.txt", source="mmaction2 tools/data/kinetics/label_map_k400.txt"),
    dict(name="sthv1", url=f"{_MM_RAW}/tools/data/sthv1/label_map.txt",
         sha256="5465813d437e762ccee1d2090d585d6383665e9f0216e055d6d506993a8b3fd7", count=174,
         file="sthv1-5465813d.txt", source="mmaction2 tools/data/sthv1/label_map.txt"),
    dict(name="sthv2", url=f"{_MM_RAW}/tools/data/sthv2/label_map.txt",
         sha256="c9c5a86ece619e1ab2e7ca0614c85377a534873e17108b13243e5d22089a0a85", count=174,
         file="sthv2-c9c5a86e.txt", source="mmaction2 tools/data/sthv2/label_map.txt"),
]

_MM1 = "https://download.openmmlab.com/mmaction/v1.0/recognition"
_MM0 = "https://download.openmmlab.com/mmaction/recognition"
_K400_DENSE = ("8 frames 8 apart (DenseSampleFrames, 10 start positions) x ThreeCrop 256 of a "
               "256 short side")
_STH_TWICE = "2 clips (SampleFrames twice_sample) x ThreeCrop 256 of a 256 short side"

WEIGHTS = [
    # TANet, mmaction2 1.x: configs/recognition/tanet/metafile.yml and README.md (URLs, top-1/5,
    # "efficient" = 1 clip x centre crop 224), test pipelines from the three configs beside them,
    # mean/std from configs/_base_/models/tanet_r50.py (B mean 103.5), at main @ 4d6c9347.
    dict(name="tanet_r50.k400", model="tanet_r50", layout="mmaction2", dataset="kinetics400",
         num_classes=400, frames=8, classes="kinetics400", release="mmaction2 1.x",
         full_name="tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb",
         url=f"{_MM1}/tanet/tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb/"
             "tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb_20220919-a34346bc.pth",
         sha256="a34346bc", top1=76.25, top5=92.41, views="10x3", protocol=_K400_DENSE,
         card=dict(mean=_mm_mean(103.5), std=_MM_STD, short_side=256, sampling="dense",
                   dense_stride=8),
         notes="README: '8 clips x 3 crop' (8 frames); reference (authors') 76.22 / 92.53"),
    dict(name="tanet_r50.sthv1", model="tanet_r50", layout="mmaction2", dataset="sthv1",
         num_classes=174, frames=8, classes="sthv1", release="mmaction2 1.x",
         full_name="tanet_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb",
         url=f"{_MM1}/tanet/tanet_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb/"
             "tanet_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb_20220906-de50e4ef.pth",
         sha256="de50e4ef", top1=49.71, top5=77.43, views="2x3", protocol=_STH_TWICE,
         card=dict(mean=_mm_mean(103.5), std=_MM_STD, short_side=256, sampling="segment"),
         notes="efficient (1 clip x centre crop 224): 46.98 / 75.75"),
    dict(name="tanet_r50.sthv1_16f", model="tanet_r50", layout="mmaction2", dataset="sthv1",
         num_classes=174, frames=16, classes="sthv1", release="mmaction2 1.x",
         full_name="tanet_imagenet-pretrained-r50_8xb6-1x1x16-50e_sthv1-rgb",
         url=f"{_MM1}/tanet/tanet_imagenet-pretrained-r50_8xb6-1x1x16-50e_sthv1-rgb/"
             "tanet_imagenet-pretrained-r50_8xb6-1x1x16-50e_sthv1-rgb_20220919-cc37e9b8.pth",
         sha256="cc37e9b8", top1=50.95, top5=79.28, views="2x3", protocol=_STH_TWICE,
         card=dict(mean=_mm_mean(103.5), std=_MM_STD, short_side=256, sampling="segment"),
         notes="efficient (1 clip x centre crop 224): 48.24 / 78.16; the config's last line "
               "sets test_pipeline = val_pipeline (1 clip x centre crop)"),
    # TANet, mmaction2 0.x: configs/recognition/tanet/metafile.yml, README.md and configs (mean
    # 103.53 in img_norm_cfg) at branch 0.x @ 71a938ab54c0ce54c43b6c21b9658408a2bb3c0f.
    dict(name="tanet_r50.k400_0x", model="tanet_r50", layout="mmaction2", dataset="kinetics400",
         num_classes=400, frames=8, classes="kinetics400", release="mmaction2 0.x",
         full_name="tanet_r50_dense_1x1x8_100e_kinetics400_rgb",
         url=f"{_MM0}/tanet/tanet_r50_dense_1x1x8_100e_kinetics400_rgb/"
             "tanet_r50_dense_1x1x8_100e_kinetics400_rgb_20210219-032c8e94.pth",
         sha256="032c8e94", top1=76.28, top5=92.6, views="10x3", protocol=_K400_DENSE,
         card=dict(mean=_mm_mean(103.53), std=_MM_STD, short_side=256, sampling="dense",
                   dense_stride=8),
         notes="trained on short-side 320 frames; reference (authors') 76.22 / 92.53"),
    dict(name="tanet_r50.sthv1_0x", model="tanet_r50", layout="mmaction2", dataset="sthv1",
         num_classes=174, frames=8, classes="sthv1", release="mmaction2 0.x",
         full_name="tanet_r50_1x1x8_50e_sthv1_rgb",
         url=f"{_MM0}/tanet/tanet_r50_1x1x8_50e_sthv1_rgb/"
             "tanet_r50_1x1x8_50e_sthv1_rgb_20210630-f4a48609.pth",
         sha256="f4a48609", top1=49.58, top5=77.31, views="2x3", protocol=_STH_TWICE,
         card=dict(mean=_mm_mean(103.53), std=_MM_STD, short_side=256, sampling="segment"),
         notes="efficient (1 clip x centre crop 224): 47.34 / 75.72; frames of height 100"),
    dict(name="tanet_r50.sthv1_16f_0x", model="tanet_r50", layout="mmaction2", dataset="sthv1",
         num_classes=174, frames=16, classes="sthv1", release="mmaction2 0.x",
         full_name="tanet_r50_1x1x16_50e_sthv1_rgb",
         url=f"{_MM0}/tanet/tanet_r50_1x1x16_50e_sthv1_rgb/"
             "tanet_r50_1x1x16_50e_sthv1_rgb_20211202-370c2128.pth",
         sha256="370c2128", top1=50.91, top5=79.13, views="2x3", protocol=_STH_TWICE,
         card=dict(mean=_mm_mean(103.53), std=_MM_STD, short_side=256, sampling="segment"),
         notes="efficient (1 clip x centre crop 224): 49.05 / 77.90; frames of height 100"),
    # TSM and TSN baselines, mmaction2 1.x: configs/recognition/{tsm,tsn}/metafile.yml, README.md
    # and configs (mean/std: configs/_base_/models/{tsm,tsn}_r50.py) at main @ 4d6c9347.
    dict(name="tsm_r50.k400", model="tsm_r50", layout="mmaction2", dataset="kinetics400",
         num_classes=400, frames=8, classes="kinetics400", release="mmaction2 1.x",
         full_name="tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb",
         url=f"{_MM1}/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb/"
             "tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb_20220831-64d69186.pth",
         sha256="64d69186", top1=73.18, top5=90.56, views="1x10",
         protocol="8 segment frames x TenCrop 224 of a 256 short side",
         card=dict(mean=_mm_mean(103.53), std=_MM_STD, short_side=256, sampling="segment")),
    dict(name="tsm_r50.sthv2", model="tsm_r50", layout="mmaction2", dataset="sthv2",
         num_classes=174, frames=8, classes="sthv2", release="mmaction2 1.x",
         full_name="tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb",
         url=f"{_MM1}/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb/"
             "tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb_20230317-be0fc26e.pth",
         sha256="be0fc26e", top1=62.72, top5=87.70, views="2x3", protocol=_STH_TWICE,
         card=dict(mean=_mm_mean(103.53), std=_MM_STD, short_side=256, sampling="segment")),
    dict(name="tsn_r50.k400", model="tsn_r50", layout="mmaction2", dataset="kinetics400",
         num_classes=400, frames=8, classes="kinetics400", release="mmaction2 1.x",
         full_name="tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb",
         url=f"{_MM1}/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb/"
             "tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb_20220906-2692d16c.pth",
         sha256="2692d16c", top1=74.12, top5=91.34, views="1x10",
         protocol="25 segment frames (T=25 at test) x TenCrop 224 of a 256 short side",
         card=dict(mean=_mm_mean(103.53), std=_MM_STD, short_side=256, sampling="segment"),
         notes="trained with 8 segments; tested with 25 (test pipeline of the 1x1x3 base config)"),
    # ImageNet initialisation (the paper's): torchvision's ResNet*_Weights.IMAGENET1K_V1 enums in
    # torchvision/models/resnet.py of the torchvision 0.29.1 wheel (PyPI): url and _metrics.
    dict(name="resnet50.imagenet", model="resnet50", layout="torchvision", dataset="imagenet1k",
         num_classes=1000, frames=None, classes=None, release="torchvision",
         full_name="ResNet50_Weights.IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet50-0676ba61.pth", sha256="0676ba61",
         top1=76.130, top5=92.862, views="1x1", protocol="centre crop 224 of a 256 short side",
         card=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    dict(name="resnet101.imagenet", model="resnet101", layout="torchvision", dataset="imagenet1k",
         num_classes=1000, frames=None, classes=None, release="torchvision",
         full_name="ResNet101_Weights.IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet101-63fe2227.pth", sha256="63fe2227",
         top1=77.374, top5=93.546, views="1x1", protocol="centre crop 224 of a 256 short side",
         card=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    dict(name="resnet152.imagenet", model="resnet152", layout="torchvision", dataset="imagenet1k",
         num_classes=1000, frames=None, classes=None, release="torchvision",
         full_name="ResNet152_Weights.IMAGENET1K_V1",
         url="https://download.pytorch.org/models/resnet152-394f9c45.pth", sha256="394f9c45",
         top1=78.312, top5=94.046, views="1x1", protocol="centre crop 224 of a 256 short side",
         card=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)),
]
