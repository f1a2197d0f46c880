"""Build the 12 CNNs of the paper, from scratch or from ImageNet weights.

`build_model(name, num_classes, init, image_size)` returns the network with its
last layer sized for `num_classes`, and for ImageNet weights which file was
loaded (path, md5, official URL), so every checkpoint can name its starting
point. torchvision gives ResNet-18/50, ResNeXt-50 (32x4d) and GoogLeNet (the
classic V1 weights); efficientnet-pytorch gives EfficientNet-B0..B7, the
package the 2022 papers used. Weight files live in the standard torch hub cache
(`<TORCH_HOME>/hub/checkpoints/`), so a machine without internet can be given
them by copying files there.

GoogLeNet's two auxiliary classifiers are switched off for both inits. The
paper does not say whether it used them; they only add extra training losses
and are thrown away at inference. We train the main head alone for scratch and
ImageNet alike, so the two inits are compared like for like. With ImageNet
weights GoogLeNet keeps `transform_input=True`, as torchvision sets for its
pretrained weights (they were ported from a model fed differently normalised
inputs); from scratch it is off, as there is nothing to adapt to.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch import utils as effnet_utils
from torch import nn

from tumorbench.core.catalog import INITS, MODELS
from tumorbench.core.errors import UserError
from tumorbench.core.fileio import md5_file

# name -> (torchvision.models builder, its weights enum; the ImageNet V1 weights are used)
TORCHVISION_MODELS = {
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnext50": ("resnext50_32x4d", "ResNeXt50_32X4D_Weights"),
    "googlenet": ("googlenet", "GoogLeNet_Weights"),
}


def torchvision_model(name: str):
    """(builder, ImageNet V1 weights) of a torchvision model. torchvision is imported here, not at the top:
    importing it takes seconds, which a stage that trains or evaluates an EfficientNet need not pay."""
    import torchvision.models as tvm

    builder, weights = TORCHVISION_MODELS[name]
    return getattr(tvm, builder), getattr(tvm, weights).IMAGENET1K_V1


EFFICIENTNET_BN_MOMENTUM = 0.01  # efficientnet-pytorch's own: TensorFlow's decay of 0.99


class PretrainedWeightsMissing(UserError, RuntimeError):
    """An ImageNet weight file is not in the cache and could not be downloaded."""


def weights_path(name: str) -> tuple[Path, str]:
    """(file, url): where the ImageNet weights of `name` are cached and their official URL."""
    if name in TORCHVISION_MODELS:
        url = torchvision_model(name)[1].url
    elif name in effnet_utils.url_map:
        url = effnet_utils.url_map[name]
    else:
        raise ValueError(f"unknown model {name!r}; known: {list(MODELS)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def download_weights(url: str, file: Path, hash_prefix: str | None = None) -> None:
    """Download `url` to `file` through a temporary name; PretrainedWeightsMissing if that fails."""
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(file.name + ".partial")
    try:
        torch.hub.download_url_to_file(url, str(partial), hash_prefix=hash_prefix, progress=True)
        os.replace(partial, file)
    except Exception as error:
        partial.unlink(missing_ok=True)
        raise PretrainedWeightsMissing(missing_message(file, url, f"downloading failed: {error}")) from error


def missing_message(file: Path, url: str, reason: str) -> str:
    return (
        f"ImageNet weights not found at {file} ({reason}). Fetch them on a machine with internet: "
        f"curl -L -o {file.name} {url}  and copy the file to {file}, or point TORCH_HOME at a directory "
        f"whose hub/checkpoints/ holds {file.name}."
    )


def ensure_weights(name: str, download: bool = True) -> tuple[Path, str]:
    """The cached ImageNet weight file of `name` (downloaded if missing and allowed) and its URL."""
    file, url = weights_path(name)
    if file.is_file():
        return file, url
    if not download:
        raise PretrainedWeightsMissing(missing_message(file, url, "downloading is disabled"))
    # torchvision names its files <name>-<sha256 prefix>.pth and checks that prefix; efficientnet-pytorch does not.
    hash_prefix = None
    if name in TORCHVISION_MODELS:
        match = re.search(torch.hub.HASH_REGEX, file.name)
        hash_prefix = match.group(1) if match else None
    download_weights(url, file, hash_prefix)
    return file, url


def use_silu(model: EfficientNet) -> None:
    """Swap EfficientNet's Swish modules for nn.SiLU: the same function in one fused op."""
    model.set_swish(memory_efficient=False)
    swish_types = (effnet_utils.MemoryEfficientSwish, effnet_utils.Swish)
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, swish_types) and type(child) is not nn.SiLU:
                setattr(parent, child_name, nn.SiLU())


def fold_symmetric_padding(model: EfficientNet) -> None:
    """Let the convolution pad where TensorFlow's "same" padding is symmetric (every stride-1 layer).

    efficientnet-pytorch copies each such layer's input into a zero-framed buffer (nn.ZeroPad2d) and
    then convolves it unpadded; the convolution's own zero padding gives the same output without the
    copy, or its backward. The asymmetric pads of stride-2 layers stay. No parameter changes.
    """
    for module in model.modules():
        if isinstance(module, effnet_utils.Conv2dStaticSamePadding) and isinstance(module.static_padding, nn.ZeroPad2d):
            left, right, top, bottom = module.static_padding.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = nn.Identity()


def build_torchvision(name: str, num_classes: int, init: str, load_weights: bool, download: bool):
    builder, weights = torchvision_model(name)
    options = {}
    if name == "googlenet":
        options = {"aux_logits": False, "transform_input": init == "imagenet", "init_weights": init == "scratch"}
    if init == "scratch":
        return builder(weights=None, num_classes=num_classes, **options), None

    info = None
    if name == "googlenet":
        options["aux_logits"] = load_weights  # the file holds the aux heads: load strictly, then drop them
    model = builder(weights=None, num_classes=len(weights.meta["categories"]), **options)
    if load_weights:
        file, url = ensure_weights(name, download)
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True), strict=True)
        info = {"file": str(file), "md5": md5_file(file), "url": url}
    if name == "googlenet":
        model.aux_logits, model.aux1, model.aux2 = False, None, None
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, info


def build_efficientnet(
    name: str, num_classes: int, init: str, image_size: int, load_weights: bool, download: bool, bn_momentum: float
):
    # efficientnet-pytorch takes TensorFlow's convention: the decay of the running averages, 1 - PyTorch's momentum
    options = {"num_classes": num_classes, "image_size": image_size, "batch_norm_momentum": 1 - bn_momentum}
    info = None
    if init == "imagenet" and load_weights:
        file, url = ensure_weights(name, download)
        # Loads all but _fc (asserting exactly _fc is missing); torch >= 2.6 loads with weights_only=True.
        model = EfficientNet.from_pretrained(name, weights_path=str(file), **options)
        info = {"file": str(file), "md5": md5_file(file), "url": url}
    else:
        model = EfficientNet.from_name(name, **options)
    use_silu(model)
    fold_symmetric_padding(model)
    return model, info


def build_model(
    name: str,
    num_classes: int,
    init: str,
    image_size: int,
    *,
    load_weights: bool = True,
    download: bool = True,
    efficientnet_bn_momentum: float = EFFICIENTNET_BN_MOMENTUM,
) -> tuple[nn.Module, dict | None]:
    """(model, weights_info): `name` with a `num_classes` head, initialised as `init`.

    weights_info is None for scratch, else {"file", "md5", "url"} of the ImageNet weights loaded.
    load_weights=False builds the same architecture without reading weights (to load a checkpoint into);
    download=False raises PretrainedWeightsMissing instead of downloading a missing weight file.
    efficientnet_bn_momentum: the BatchNorm momentum of EfficientNet's layers (PyTorch's convention; the
    library's default unless given); it changes how training updates the running statistics, nothing else.
    The model is on the CPU and returns a logits tensor in train and eval mode.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {list(MODELS)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {list(INITS)}")
    if name in TORCHVISION_MODELS:
        return build_torchvision(name, num_classes, init, load_weights, download)
    return build_efficientnet(name, num_classes, init, image_size, load_weights, download, efficientnet_bn_momentum)


def model_flops(model: nn.Module, image_size: int) -> float:
    """GFLOPs of one image's forward pass: 2 x the multiply-adds of every Conv2d and Linear layer."""
    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            macs += output.numel() * kernel * module.in_channels // module.groups
        else:
            macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    parameter = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return 2 * macs / 1e9
