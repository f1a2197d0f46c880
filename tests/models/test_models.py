import hashlib
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
import yaml
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch import utils as effnet_utils
from torch import nn

from tumorbench.core.catalog import MODELS
from tumorbench.core.variants import Variant
from tumorbench.models.architectures import (
    TORCHVISION_MODELS,
    PretrainedWeightsMissing,
    build_model,
    download_weights,
    model_flops,
    torchvision_model,
    weights_path,
)
from tumorbench.models.inference import CheckpointError, load_checkpoint

SIZE = 64
LARGE = ("efficientnet-b5", "efficientnet-b6", "efficientnet-b7")
HEAD_KEYS = ("fc.weight", "fc.bias", "_fc.weight", "_fc.bias")


def imagenet_shaped_state_dict(name: str) -> dict:
    """A randomly initialised state dict with exactly the keys and shapes of the official file."""
    torch.manual_seed(1234)
    if name == "googlenet":  # the official file holds the auxiliary heads too
        return tvm.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict()
    if name in TORCHVISION_MODELS:
        return torchvision_model(name)[0](weights=None).state_dict()
    return EfficientNet.from_name(name).state_dict()


@pytest.fixture(scope="module")
def fake_torch_home(tmp_path_factory):
    """A TORCH_HOME whose weight files are written on first use, once per test module."""
    home = tmp_path_factory.mktemp("torch_home")
    written = {}

    def weights_for(name: str) -> tuple[Path, dict, str]:
        if name not in written:
            file = home / "hub" / "checkpoints" / Path(weights_path(name)[1]).name
            file.parent.mkdir(parents=True, exist_ok=True)
            state = imagenet_shaped_state_dict(name)
            torch.save(state, file)
            written[name] = (file, state, hashlib.md5(file.read_bytes()).hexdigest())
        return written[name]

    return home, weights_for


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def forward_backward(model: nn.Module, num_classes: int) -> None:
    x = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    model.train()
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, num_classes)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        logits = model(x[:1])
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, num_classes)


def head_of(model: nn.Module) -> nn.Linear:
    return model._fc if isinstance(model, EfficientNet) else model.fc


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("name", MODELS)
def test_scratch_model_builds_and_trains(name, num_classes, empty_torch_home):
    torch.manual_seed(0)
    model, info = build_model(name, num_classes, "scratch", SIZE)
    assert info is None
    assert head_of(model).out_features == num_classes
    forward_backward(model, num_classes)


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize(  # the largest weight files take seconds to write
    "name", [pytest.param(m, marks=pytest.mark.slow) if m in LARGE else m for m in MODELS]
)
def test_imagenet_model_loads_the_file_strictly_and_trains(name, num_classes, fake_torch_home, monkeypatch):
    home, weights_for = fake_torch_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    file, state, md5 = weights_for(name)
    torch.manual_seed(0)
    model, info = build_model(name, num_classes, "imagenet", SIZE, download=False)

    assert info == {"file": str(file), "md5": md5, "url": weights_path(name)[1]}
    loaded = model.state_dict()
    body = [key for key in loaded if key not in HEAD_KEYS]
    assert len(body) > 10
    for key in body:
        assert torch.equal(loaded[key], state[key]), key
    assert head_of(model).out_features == num_classes
    forward_backward(model, num_classes)


def test_googlenet_has_no_aux_heads_and_transforms_input_only_for_imagenet(fake_torch_home, monkeypatch):
    home, weights_for = fake_torch_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    weights_for("googlenet")
    scratch, _ = build_model("googlenet", 2, "scratch", SIZE)
    imagenet, _ = build_model("googlenet", 2, "imagenet", SIZE, download=False)
    for model in (scratch, imagenet):
        assert model.aux_logits is False and model.aux1 is None and model.aux2 is None
    assert scratch.transform_input is False
    assert imagenet.transform_input is True


def test_architecture_only_build_needs_no_weight_file(empty_torch_home):
    model, info = build_model("googlenet", 3, "imagenet", SIZE, load_weights=False, download=False)
    assert info is None and model.transform_input is True and model.fc.out_features == 3
    model, info = build_model("efficientnet-b0", 3, "imagenet", SIZE, load_weights=False, download=False)
    assert info is None and model._fc.out_features == 3


@pytest.mark.parametrize("name", ["resnet50", "efficientnet-b3"])
def test_missing_weights_offline_names_file_and_url(name, empty_torch_home):
    file, url = weights_path(name)
    assert file == empty_torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    with pytest.raises(PretrainedWeightsMissing) as error:
        build_model(name, 2, "imagenet", SIZE, download=False)
    message = str(error.value)
    assert str(file) in message and url in message and "curl -L -o" in message and "TORCH_HOME" in message
    assert isinstance(error.value, RuntimeError)


def test_weights_urls_are_the_official_v1_files():
    assert weights_path("resnet50")[1] == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert weights_path("resnet18")[1] == tvm.ResNet18_Weights.IMAGENET1K_V1.url
    assert weights_path("resnext50")[1] == tvm.ResNeXt50_32X4D_Weights.IMAGENET1K_V1.url
    assert weights_path("googlenet")[1] == tvm.GoogLeNet_Weights.IMAGENET1K_V1.url
    for b in range(8):
        assert weights_path(f"efficientnet-b{b}")[1] == effnet_utils.url_map[f"efficientnet-b{b}"]
    with pytest.raises(ValueError, match="unknown model"):
        weights_path("vgg16")


def test_download_weights_goes_through_a_temporary_name(tmp_path):
    source = tmp_path / "source.pth"
    source.write_bytes(b"weights" * 1000)
    target = tmp_path / "cache" / "model-abcdef12.pth"
    download_weights(source.as_uri(), target, hash_prefix=hashlib.sha256(source.read_bytes()).hexdigest()[:8])
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_failed_download_raises_clear_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "cache" / "model.pth"
    missing_url = (tmp_path / "not-there.pth").as_uri()
    with pytest.raises(PretrainedWeightsMissing) as error:
        download_weights(missing_url, target)
    assert str(target) in str(error.value) and missing_url in str(error.value)
    assert list(target.parent.iterdir()) == []


def test_download_with_wrong_hash_is_refused(tmp_path):
    source = tmp_path / "source.pth"
    source.write_bytes(b"not the real weights")
    target = tmp_path / "cache" / "model.pth"
    with pytest.raises(PretrainedWeightsMissing):
        download_weights(source.as_uri(), target, hash_prefix="00000000")
    assert not target.exists()


def test_silu_and_folded_padding_give_the_package_models_outputs_and_gradients(empty_torch_home):
    torch.manual_seed(0)
    model, _ = build_model("efficientnet-b0", 3, "scratch", SIZE)
    kinds = {type(m) for m in model.modules()}
    assert nn.SiLU in kinds and effnet_utils.MemoryEfficientSwish not in kinds
    pads = [
        m.static_padding.padding
        for m in model.modules()
        if isinstance(m, effnet_utils.Conv2dStaticSamePadding) and isinstance(m.static_padding, nn.ZeroPad2d)
    ]
    assert pads and all(left != right or top != bottom for left, right, top, bottom in pads)  # asymmetric ones stay
    assert sum(m.padding != (0, 0) for m in model.modules() if isinstance(m, nn.Conv2d)) == 12  # B0's stride-1 3x3/5x5
    reference = EfficientNet.from_name("efficientnet-b0", num_classes=3, image_size=SIZE)  # memory-efficient swish
    assert effnet_utils.MemoryEfficientSwish in {type(m) for m in reference.modules()}
    reference.load_state_dict(model.state_dict())
    model.eval(), reference.eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    x_ref = x.clone().requires_grad_(True)
    x.requires_grad_(True)
    out, out_ref = model(x), reference(x_ref)
    assert torch.allclose(out, out_ref, rtol=1e-5, atol=1e-6)
    out.sum().backward(), out_ref.sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-4, atol=1e-6)


def test_model_flops_matches_torchvision_reference():
    model = tvm.resnet18(weights=None).train()
    gflops = model_flops(model, 224)
    # torchvision's "_ops" is GMACs (multiply-adds) at 224 px
    assert abs(gflops / 2 - tvm.ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]) < 0.01
    assert model.training and not model._forward_hooks and not model.conv1._forward_hooks
    assert model_flops(model, 448) == pytest.approx(gflops * 4, rel=0.01)  # every feature map 2x wider and taller


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg16", 2, "scratch", SIZE)
    with pytest.raises(ValueError, match="unknown init"):
        build_model("resnet18", 2, "random", SIZE)


def test_efficientnet_bn_momentum_option_sets_every_batchnorm_and_nothing_else(empty_torch_home):
    torch.manual_seed(0)
    default, _ = build_model("efficientnet-b0", 2, "scratch", SIZE)
    torch.manual_seed(0)
    faster, _ = build_model("efficientnet-b0", 2, "scratch", SIZE, efficientnet_bn_momentum=0.1)
    momenta = {round(m.momentum, 9) for m in default.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {0.01}  # efficientnet-pytorch's own default
    assert {round(m.momentum, 9) for m in faster.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}
    state, other = default.state_dict(), faster.state_dict()
    assert all(torch.equal(state[key], other[key]) for key in state)  # same weights: only the momentum differs


@pytest.mark.parametrize(
    ("protocol", "stage"),
    [
        ("paper", "train@br35h-resnet18-scratch"),
        ("grouped", "train_grouped@br35h-resnet18-scratch"),
        ("cv3", "train_cv@br35h-resnet18-scratch-3"),
    ],
)
def test_a_missing_checkpoint_names_the_stage_that_retrains_it(tmp_path, protocol, stage):
    variant = Variant("br35h", "resnet18", "scratch", protocol)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / variant.checkpoint, variant.stage("train"))
    assert f"`dvc repro -f -s {stage}`" in str(error.value)
    stages = yaml.safe_load((Path(__file__).parents[2] / "dvc.yaml").read_text())["stages"]
    assert stage.split("@")[0] in stages  # a stage dvc.yaml defines, not a name made up here
