"""Models: forward/backward, output shapes, parameter counts against the papers' architectures, errors."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pyseg.models import create_model, list_models, split_params
from pyseg.models.backbones import ResNetBackbone, VGG16Features

torch.set_num_threads(1)  # the machine is shared; 1 thread is steadier

EXPECTED_NAMES = {
    "deconvnet_vgg16", "deeplabv1_vgg16", "deeplabv2_vgg16", "deeplabv2_resnet101", "deeplabv3_resnet18",
    "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3plus_resnet18", "deeplabv3plus_resnet50",
    "deeplabv3plus_resnet101",
}


# ----------------------------------------------------------------------------- parameter arithmetic
def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c  # weight + bias (running stats are buffers)


VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
               (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
VGG16_CONV_PARAMS = sum(conv(a, b, 3) for a, b in VGG16_CONVS)  # 14,714,688: the well-known VGG16 conv count
VGG16_BN_PARAMS = sum(bn(b) for _, b in VGG16_CONVS)  # 8,448
# torchvision's documented totals (resnet18 11,689,512; resnet50 25,557,032; resnet101 44,549,160) minus fc
RESNET_TRUNK = {18: 11_689_512 - conv(512, 1000, 1), 50: 25_557_032 - conv(2048, 1000, 1),
                101: 44_549_160 - conv(2048, 1000, 1)}


def deconvnet_params(C, fc=4096):
    """Noh et al. 2015, Table/Fig. 2: VGG16-BN encoder, fc6 7x7 (512->4096), fc7 1x1, deconv-fc6 7x7
    (4096->512), mirrored 3x3 deconvs with BN, 1x1 score. The paper quotes 252M parameters."""
    dec = [(512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 256), (256, 256), (256, 256),
           (256, 128), (128, 128), (128, 64), (64, 64), (64, 64)]
    return (VGG16_CONV_PARAMS + VGG16_BN_PARAMS + conv(512, fc, 7) + bn(fc) + conv(fc, fc, 1) + bn(fc)
            + conv(fc, 512, 7) + bn(512) + sum(conv(a, b, 3) + bn(b) for a, b in dec) + conv(64, C, 1))


def largefov_branch(C, rate_count=1):
    """DeepLab fc6 (3x3 dilated, 512->1024) + fc7 (1x1 1024) + fc8 (1x1 -> C) per branch."""
    return rate_count * (conv(512, 1024, 3) + conv(1024, 1024, 1) + conv(1024, C, 1))


def aspp_v3_params(cin, ch=256):
    """1x1 + three 3x3 atrous + image pooling (1x1), each no-bias conv + BN; concat (5*256) -> 1x1 256 + BN."""
    return (conv(cin, ch, 1, False) + 3 * conv(cin, ch, 3, False) + conv(cin, ch, 1, False) + 5 * bn(ch)
            + conv(5 * ch, ch, 1, False) + bn(ch))


def v3plus_decoder(low, ch=256):
    """layer1 -> 1x1 48 + BN; concat (ch + 48) -> two 3x3 256 convs + BN."""
    return conv(low, 48, 1, False) + bn(48) + conv(ch + 48, 256, 3, False) + bn(256) + conv(256, 256, 3, False) + bn(256)


C = 21  # PASCAL VOC, the papers' setting
EXPECTED_PARAMS = {
    "deconvnet_vgg16": deconvnet_params(C),
    # LargeFOV: the paper's VGG16 has no BN -> 20.5M (DeepLab v1 paper, Table 2: "20.5M"); ours adds BN by default
    "deeplabv1_vgg16": VGG16_CONV_PARAMS + VGG16_BN_PARAMS + largefov_branch(C),
    "deeplabv2_vgg16": VGG16_CONV_PARAMS + VGG16_BN_PARAMS + largefov_branch(C, 4),
    # ResNet-101 + ASPP-L: four 3x3 (2048 -> C) score convs, summed
    "deeplabv2_resnet101": RESNET_TRUNK[101] + 4 * conv(2048, C, 3),
    "deeplabv3_resnet18": RESNET_TRUNK[18] + aspp_v3_params(512) + conv(256, C, 1),
    "deeplabv3_resnet50": RESNET_TRUNK[50] + aspp_v3_params(2048) + conv(256, C, 1),
    "deeplabv3_resnet101": RESNET_TRUNK[101] + aspp_v3_params(2048) + conv(256, C, 1),
    "deeplabv3plus_resnet18": RESNET_TRUNK[18] + aspp_v3_params(512) + v3plus_decoder(64) + conv(256, C, 1),
    "deeplabv3plus_resnet50": RESNET_TRUNK[50] + aspp_v3_params(2048) + v3plus_decoder(256) + conv(256, C, 1),
    "deeplabv3plus_resnet101": RESNET_TRUNK[101] + aspp_v3_params(2048) + v3plus_decoder(256) + conv(256, C, 1),
}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_list_models():
    assert set(list_models()) == EXPECTED_NAMES
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_parameter_counts(name):
    with torch.device("meta"):  # no memory, no init cost
        m = create_model(name, C)
    assert n_params(m) == EXPECTED_PARAMS[name]
    backbone, head = split_params(m)
    assert len(backbone) + len(head) == len(list(m.parameters()))
    assert {id(p) for p in backbone}.isdisjoint({id(p) for p in head})
    assert sum(p.numel() for p in backbone) == n_params(m.backbone)


def test_parameter_counts_match_papers():
    # DeconvNet: "252M" (Noh et al. 2015); DeepLab-LargeFOV: "20.5M" without BN (Chen et al. 2015, Table 2)
    assert abs(EXPECTED_PARAMS["deconvnet_vgg16"] - 252e6) / 252e6 < 0.005
    with torch.device("meta"):
        v1 = create_model("deeplabv1_vgg16", 21, batch_norm=False)
    assert n_params(v1) == VGG16_CONV_PARAMS + largefov_branch(21)
    assert round(n_params(v1) / 1e6, 1) == 20.5
    # DeepLab v2/v3 ResNet-101 and v3+: trunk 42.5M plus the heads
    assert round(EXPECTED_PARAMS["deeplabv2_resnet101"] / 1e6, 1) == 44.0
    assert round(EXPECTED_PARAMS["deeplabv3_resnet101"] / 1e6, 1) == 58.0
    assert round(EXPECTED_PARAMS["deeplabv3plus_resnet101"] / 1e6, 1) == 59.3


def test_backbone_keys_follow_torchvision_layout():
    with torch.device("meta"):
        ours = set(VGG16Features("largefov", batch_norm=True).state_dict())
        tv = {k for k in torchvision.models.vgg16_bn(weights=None).state_dict() if k.startswith("features.")}
        assert ours == tv
        ours = set(ResNetBackbone(50, 16).state_dict())
        tv = {k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")}
        assert ours == tv


# ----------------------------------------------------------------------------- forward / backward
SMALL = [  # (name, kwargs, batch, H, W): small inputs; ResNet-101 models once each at batch 1
    ("deeplabv1_vgg16", {}, 2, 32, 40),
    ("deeplabv2_vgg16", {}, 1, 32, 32),
    ("deeplabv2_resnet101", {}, 1, 32, 40),
    ("deeplabv3_resnet18", {}, 2, 64, 96),
    ("deeplabv3_resnet18", {"output_stride": 8}, 2, 32, 32),
    ("deeplabv3_resnet50", {}, 2, 32, 48),
    ("deeplabv3_resnet101", {"output_stride": 8}, 1, 32, 32),
    ("deeplabv3plus_resnet18", {}, 2, 64, 96),
    ("deeplabv3plus_resnet50", {"output_stride": 8}, 1, 32, 32),
    ("deeplabv3plus_resnet101", {}, 1, 32, 48),
    ("deconvnet_vgg16", {"fc6_padding": 3, "fc_channels": 64}, 2, 64, 96),
]


@pytest.mark.parametrize("name,kwargs,b,h,w", SMALL, ids=[f"{n}-{b}x{h}x{w}-{k}" for n, k, b, h, w in SMALL])
def test_forward_backward(name, kwargs, b, h, w):
    torch.manual_seed(0)
    m = create_model(name, 5, **kwargs).train()
    x = torch.randn(b, 3, h, w)
    y = m(x)
    assert y.shape == (b, 5, h, w)
    assert torch.isfinite(y).all()
    y.logsumexp(1).mean().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0  # the gradient reaches the first conv
    if "resnet101" not in name:
        m.eval()
        with torch.no_grad():
            assert m(x[:1]).shape == (1, 5, h, w)


def test_deconvnet_paper_configuration_at_224():
    """The 252M-parameter model with a valid 7x7 fc6 (pool5 7x7 -> 1x1 -> deconv-fc6 -> 7x7)."""
    torch.manual_seed(0)
    m = create_model("deconvnet_vgg16", 3).eval()
    assert n_params(m) == deconvnet_params(3)
    seen = {}
    m.backbone.register_forward_hook(lambda mod, i, o: seen.update(pool5=o[0].shape, switches=len(o[1])))
    m.fc[0].register_forward_hook(lambda mod, i, o: seen.update(fc6=o.shape))
    m.fc[6].register_forward_hook(lambda mod, i, o: seen.update(deconv_fc6=o.shape))
    with torch.no_grad():
        y = m(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 3, 224, 224)
    assert seen == {"pool5": (1, 512, 7, 7), "switches": 5, "fc6": (1, 4096, 1, 1), "deconv_fc6": (1, 512, 7, 7)}


def test_deconvnet_unpools_to_the_switch_positions():
    """With everything after pool5 zeroed except a bias, unpool1 puts values only at pool1's argmax pixels."""
    m = create_model("deconvnet_vgg16", 1, fc6_padding=3, fc_channels=8).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, switches, _ = m.backbone(x)
        unpooled = m.unpool(torch.ones(1, 64, 32, 32), switches[0], output_size=(64, 64))
    # one nonzero per 2x2 window and channel, at the argmax
    assert (unpooled != 0).sum().item() == 64 * 32 * 32
    assert unpooled.view(64, 32, 2, 32, 2).sum((2, 4)).eq(1).all()


@pytest.mark.parametrize("os_,expect", [(16, 4), (8, 8)])
def test_resnet_output_stride(os_, expect):
    b = ResNetBackbone(18, os_).eval()
    with torch.no_grad():
        out = b(torch.randn(1, 3, 64, 64))
    assert out["out"].shape[-1] == expect and out["low"].shape[-1] == 16


def test_largefov_output_stride_8():
    b = VGG16Features("largefov").eval()
    with torch.no_grad():
        assert b(torch.randn(1, 3, 64, 72)).shape == (1, 512, 8, 9)


def test_image_pooling_accepts_a_batch_of_one_in_training():
    m = create_model("deeplabv3_resnet18", 4).train()
    m(torch.randn(1, 3, 64, 64)).mean().backward()


# ----------------------------------------------------------------------------- errors
def test_bad_name_lists_choices_and_suggests():
    with pytest.raises(ValueError, match="deeplabv3_resnet50") as e:
        create_model("deeplabv3_resnet5", 11)
    assert "Did you mean" in str(e.value) and "deconvnet_vgg16" in str(e.value)
    with pytest.raises(ValueError, match="Choices"):
        create_model("unet", 11)


def test_bad_kwargs_and_num_classes():
    with pytest.raises(TypeError, match="output_stride"):
        create_model("deeplabv3_resnet18", 11, outputstride=8)
    with pytest.raises(ValueError, match="output_stride"):
        create_model("deeplabv3_resnet18", 11, output_stride=4)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("deeplabv3_resnet18", 0)
    with pytest.raises(ValueError, match="fc6_padding"):
        create_model("deconvnet_vgg16", 11, fc6_padding=1)


def test_bad_input_sizes_are_explained():
    m = create_model("deconvnet_vgg16", 2, fc_channels=8)
    with pytest.raises(ValueError, match="divisible by 32"):
        m(torch.randn(1, 3, 230, 230))
    with pytest.raises(ValueError, match=r"fc6_padding=3") as e:
        m(torch.randn(1, 3, 64, 64))
    assert ">= 224" in str(e.value)
    r = create_model("deeplabv3plus_resnet18", 2)
    with pytest.raises(ValueError, match=">= 32"):
        r(torch.randn(1, 3, 16, 64))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        r(torch.randn(1, 1, 64, 64))
    with pytest.raises(TypeError, match="float"):
        r(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


# ----------------------------------------------------------------------------- pretrained backbone files
def test_pretrained_backbone_from_local_file(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)  # a torchvision classification checkpoint, fc included
    path = tmp_path / "r18.pth"
    torch.save(tv.state_dict(), path)
    m = create_model("deeplabv3plus_resnet18", 3, pretrained_backbone=str(path))
    assert torch.equal(m.backbone.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert torch.equal(m.backbone.bn1.running_var, tv.bn1.running_var)
    # wrapped in {"state_dict": ...} with a "module." prefix also loads
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, path)
    create_model("deeplabv3_resnet18", 3, pretrained_backbone=str(path))


def test_pretrained_backbone_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone=str(tmp_path / "nope.pth"))
    sd = torchvision.models.resnet18(weights=None).state_dict()
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("layer4")}, bad)
    with pytest.raises(ValueError, match=r"missing keys \(e\.g\. layer4"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone=str(bad))
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(sd, bad)
    with pytest.raises(ValueError, match="shape mismatch.*conv1.weight"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone=str(bad))
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        create_model("deeplabv3_resnet18", 3, pretrained_backbone=str(bad))


# ------------------------------------------------------------------------------- dilation rates, switches
def taps(conv: torch.nn.Conv2d) -> list[int]:
    """The row offsets a 3x3 conv reads, found by its own forward on an impulse: [-r, 0, r] at dilation r."""
    probe = torch.nn.Conv2d(1, 1, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                            dilation=conv.dilation, bias=False)
    torch.nn.init.ones_(probe.weight)
    reach = (conv.kernel_size[0] // 2) * conv.dilation[0]
    x = torch.zeros(1, 1, 4 * reach + 1, 4 * reach + 1)
    x[0, 0, 2 * reach, 2 * reach] = 1
    with torch.no_grad():
        rows = probe(x)[0, 0].nonzero()[:, 0].unique()
    return sorted(2 * reach - int(r) for r in rows)


def rate_of(conv: torch.nn.Conv2d) -> int:
    t = taps(conv)
    assert len(t) == 3 and t[1] == 0 and t[0] == -t[2], f"not a centred 3x3 conv: taps {t}"
    return t[2]


@pytest.mark.parametrize("name", ["deeplabv3_resnet18", "deeplabv3plus_resnet18"])
@pytest.mark.parametrize("os_,rates", [(16, [6, 12, 18]), (8, [12, 24, 36])])
def test_aspp_rates_double_at_output_stride_8(name, os_, rates):
    m = create_model(name, 3, output_stride=os_)
    assert [rate_of(b[0]) for b in m.aspp.branches[1:4]] == rates
    assert m.aspp.branches[0][0].kernel_size == (1, 1)


def test_deeplab_v2_aspp_l_rates():
    v2r = create_model("deeplabv2_resnet101", 3)
    assert [rate_of(c) for c in v2r.aspp] == [6, 12, 18, 24]
    v2v = create_model("deeplabv2_vgg16", 3, fc_channels=8)
    assert [rate_of(b[0]) for b in v2v.branches] == [6, 12, 18, 24]


def test_deeplab_v1_fc6_rate_12_and_conv5_rate_2():
    m = create_model("deeplabv1_vgg16", 3, fc_channels=8)
    assert [rate_of(b[0]) for b in m.branches] == [12]
    convs = [c for c in m.backbone.features if isinstance(c, torch.nn.Conv2d)]
    assert [rate_of(c) for c in convs] == [1] * 10 + [2] * 3  # conv5_1..3 dilated after pool4's stride 1


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("os_,layer3,layer4", [(16, 1, 2), (8, 2, 4)])
def test_resnet_backbone_dilations(depth, os_, layer3, layer4):
    b = ResNetBackbone(depth, os_)
    last = lambda layer: layer[-1].conv2  # noqa: E731  (the 3x3 conv of BasicBlock and Bottleneck)
    assert (rate_of(last(b.layer3)), rate_of(last(b.layer4))) == (layer3, layer4)


def test_deconvnet_unpools_with_the_switches_in_mirror_order():
    """Decoder stage k starts from pool (6 - k)'s switches: what enters it is nonzero only at that pool's argmax
    positions (and somewhere), so upsampling that ignores the switches, or switches in another order, fail."""
    torch.manual_seed(0)
    m = create_model("deconvnet_vgg16", 2, fc6_padding=3, fc_channels=8).eval()
    x = torch.randn(1, 3, 64, 96)
    entering = []
    for stage in m.decoder:
        stage.register_forward_pre_hook(lambda mod, args: entering.append(args[0]))
    with torch.no_grad():
        _, switches, _ = m.backbone(x)
        m(x)
    assert len(entering) == 5
    for k, (got, idx) in enumerate(zip(entering, reversed(switches))):
        assert got.shape[:2] == idx.shape[:2] and got.shape[-2:] == (2 * idx.shape[-2], 2 * idx.shape[-1])
        at_switch = torch.zeros_like(got, dtype=torch.bool).flatten(2).scatter_(2, idx.flatten(2), True)
        nonzero = got.flatten(2) != 0
        assert nonzero.any() and not nonzero[~at_switch].any(), f"stage {k + 1} is not unpooled with pool {5 - k}"
