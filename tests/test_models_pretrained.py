"""ImageNet backbones by name, through torchvision's weights API and cache, without the network.

Each test points TORCH_HOME at a temporary folder and places a locally made state_dict under the exact file
name torchvision looks for (``$TORCH_HOME/hub/checkpoints/<basename of the weights URL>``); any attempt to
download fails the test.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from pyseg.models import create_model
from pyseg.models import pretrained as P

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

# The cache file names of torchvision 0.29's IMAGENET1K_V1 weights, spelled out so a change is noticed.
CACHE_NAMES = {"vgg16": "vgg16-397923af.pth", "vgg16_bn": "vgg16_bn-6c64b313.pth",
               "resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth",
               "resnet101": "resnet101-63fe2227.pth"}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    (home / "hub" / "checkpoints").mkdir(parents=True)
    yield home / "hub" / "checkpoints"


def _place(folder: Path, arch: str, seed: int = 0) -> dict:
    """A random state_dict of torchvision's ``arch`` (every tensor random, buffers too) at the cached path."""
    g = torch.Generator().manual_seed(seed)
    ref = getattr(torchvision.models, arch)(weights=None).state_dict()
    state = {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in ref.items()}
    torch.save(state, folder / CACHE_NAMES[arch])
    return state


def test_cache_names_are_torchvisions(torch_home):
    for arch, name in CACHE_NAMES.items():
        w = P.weights_enum(arch, "imagenet")
        assert w.name == "IMAGENET1K_V1"
        assert P.cache_path(w) == str(torch_home / name)


@pytest.mark.parametrize("model,arch", [("deeplabv3plus_resnet18", "resnet18"), ("deeplabv3_resnet50", "resnet50")])
def test_resnet_backbone_by_name_fills_every_tensor(torch_home, model, arch):
    state = _place(torch_home, arch)
    m = create_model(model, 4, pretrained_backbone="imagenet")
    own = m.backbone.state_dict()
    assert own, "empty backbone"
    for k, v in own.items():
        assert torch.equal(v, state[k]), k
    # the head is not touched by the backbone file
    fresh = create_model(model, 4)
    assert not torch.equal(m.backbone.conv1.weight, fresh.backbone.conv1.weight)


@pytest.mark.slow
def test_resnet101_for_deeplabv2(torch_home):
    state = _place(torch_home, "resnet101")
    m = create_model("deeplabv2_resnet101", 3, pretrained_backbone="imagenet")
    assert torch.equal(m.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert torch.equal(m.backbone.bn1.running_var, state["bn1.running_var"])


@pytest.mark.slow
def test_deeplabv1_vgg16_decimates_fc6_fc7(torch_home):
    state = _place(torch_home, "vgg16")
    m = create_model("deeplabv1_vgg16", 3, pretrained_backbone="imagenet", batch_norm=False)
    assert torch.equal(m.backbone.features[28].weight, state["features.28.weight"])  # conv5_3
    fc6, fc7 = m.branches[0][0], m.branches[0][3]
    assert fc6.kernel_size == (3, 3) and fc6.dilation == (12, 12) and fc6.out_channels == 1024
    w6 = state["classifier.0.weight"].view(4096, 512, 7, 7)
    # filter j of the 1024 is VGG's filter 4j; tap (a, b) of the 3x3 is VGG's (3a, 3b)
    for j, a, b in [(0, 0, 0), (1, 2, 1), (255, 1, 2), (1023, 2, 2)]:
        assert torch.equal(fc6.weight[j, :, a, b], w6[4 * j, :, 3 * a, 3 * b])
        assert fc6.bias[j] == state["classifier.0.bias"][4 * j]
    w7 = state["classifier.3.weight"]
    for i, j in [(0, 0), (5, 7), (1023, 511)]:
        assert fc7.weight[i, j, 0, 0] == w7[4 * i, 4 * j]
    assert torch.equal(fc7.bias, state["classifier.3.bias"][::4])


@pytest.mark.slow
def test_deeplabv2_vgg16_bn_every_branch_from_fc6(torch_home):
    state = _place(torch_home, "vgg16_bn")
    m = create_model("deeplabv2_vgg16", 3, pretrained_backbone="imagenet")
    assert torch.equal(m.backbone.features[1].running_mean, state["features.1.running_mean"])  # BN layout
    for branch in m.branches:
        assert torch.equal(branch[0].weight, state["classifier.0.weight"].view(4096, 512, 7, 7)[::4, :, ::3, ::3])


@pytest.mark.slow
def test_deconvnet_fc6_is_vgg_fc6_as_a_7x7_conv(torch_home):
    state = _place(torch_home, "vgg16_bn")
    m = create_model("deconvnet_vgg16", 3, pretrained_backbone="imagenet")
    fc6, fc7 = m.fc[0], m.fc[3]
    # the valid 7x7 conv over a 512x7x7 map computes exactly VGG16's linear fc6 over the flattened map
    x = torch.randn(2, 512, 7, 7)
    lin = torch.nn.functional.linear(x.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
    torch.testing.assert_close(fc6(x).flatten(1), lin, rtol=1e-4, atol=1e-3)
    h = torch.randn(2, 4096, 1, 1)
    lin7 = torch.nn.functional.linear(h.flatten(1), state["classifier.3.weight"], state["classifier.3.bias"])
    torch.testing.assert_close(fc7(h).flatten(1), lin7, rtol=1e-4, atol=1e-3)


def test_light_fc_channels_keep_random_fc_with_a_warning(torch_home, caplog):
    state = _place(torch_home, "vgg16")
    m = create_model("deeplabv1_vgg16", 3, pretrained_backbone="imagenet", batch_norm=False, fc_channels=1000)
    assert "fc6/fc7" in caplog.text and "not loaded" in caplog.text
    assert torch.equal(m.backbone.features[0].weight, state["features.0.weight"])


def test_offline_names_the_file_and_where_to_put_it(torch_home):
    with pytest.raises(P.PretrainedWeightsError) as e:
        create_model("deeplabv3_resnet18", 3, pretrained_backbone="imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(torch_home) in msg and "TORCH_HOME" in msg
    assert "network disabled in tests" in msg
    assert isinstance(e.value, FileNotFoundError)  # the CLIs turn it into one error line
    assert not list(torch_home.iterdir()), "nothing half-written in the cache"


def test_truncated_cached_file(torch_home):
    _place(torch_home, "resnet18")
    path = torch_home / CACHE_NAMES["resnet18"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(P.PretrainedWeightsError, match=r"cached weight file .*resnet18-f37072fd\.pth.*delete it"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone="imagenet")


def test_wrong_shaped_cached_file(torch_home):
    state = _place(torch_home, "resnet18")
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    del state["layer4.1.bn2.bias"]
    torch.save(state, torch_home / CACHE_NAMES["resnet18"])
    with pytest.raises(ValueError, match=r"1 missing keys \(e\.g\. layer4\.1\.bn2\.bias\).*1 shape mismatches "
                                         r"\(e\.g\. layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\)"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone="imagenet")


def test_resnet50_weights_of_another_depth(torch_home):
    _place(torch_home, "resnet18")
    (torch_home / CACHE_NAMES["resnet18"]).rename(torch_home / CACHE_NAMES["resnet50"])
    with pytest.raises(ValueError, match="does not fit ResNetBackbone.*missing keys"):
        create_model("deeplabv3_resnet50", 3, pretrained_backbone="imagenet")


def test_unknown_weights_version_and_missing_file(torch_home, tmp_path):
    with pytest.raises(ValueError, match="no IMAGENET1K_V2 weights for resnet18; choose one of imagenet"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone="imagenet1k_v2")
    with pytest.raises(FileNotFoundError, match="not found: .*nope.pth .*weights names imagenet"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone=str(tmp_path / "nope.pth"))


def test_checkpoints_do_not_ask_for_the_weights_again():
    from pyseg.training.build import checkpoint_model_kwargs

    assert checkpoint_model_kwargs({"pretrained_backbone": "imagenet", "output_stride": 8}) == {"output_stride": 8}


def test_shipped_competition_configs_use_imagenet_and_the_demo_does_not():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        kw = (yaml.safe_load(path.read_text()).get("model") or {}).get("kwargs") or {}
        want = None if path.stem == "demo" or path.stem.startswith("camvid_") else "imagenet"  # CPU experiments
        assert kw.get("pretrained_backbone") == want, path.name
