"""The backbones' input layout: a convolutional first layer reads a channels-last batch."""
import pytest
import torch

from bench.models import BACKBONES, FeatureNet


@pytest.mark.parametrize("name", ["convnet28", "convnet32"])
def test_first_convolution_writes_a_channels_last_map_with_the_same_values(name):
    torch.manual_seed(0)
    net = FeatureNet(BACKBONES[name])
    seen = []
    net.layers[0].register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = torch.randint(0, 256, (4, *BACKBONES[name].in_shape), dtype=torch.uint8)
    features = net(x)
    first = seen[0]
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    # the same function as the layers applied to the plain NCHW batch
    h = net.preprocess(x).contiguous()
    reference = torch.nn.functional.conv2d(h, net.layers[0].weight, net.layers[0].bias, padding=1)
    assert torch.allclose(first, reference, atol=1e-5)
    assert features.shape == (4, net.out_features)


def test_every_backbone_normalises_its_inputs():
    """An unnormalised input (mean 0, std 1 on [0, 1] pixels) left Omniglot's joint training at chance."""
    for name, spec in BACKBONES.items():
        assert 0.0 < spec.mean < 1.0 and 0.0 < spec.std < 0.5, name


def dense_nchw_features(net: FeatureNet, x: torch.Tensor) -> torch.Tensor:
    """The same layers applied the plain way: contiguous NCHW maps throughout, flattened before a linear layer."""
    h = net.preprocess(x).contiguous()
    for layer_spec, layer in zip(net.spec.layers, net.layers):
        if layer_spec.kind == "linear":
            h = h.flatten(1)
        h = torch.relu(layer(h)).contiguous()
        if layer_spec.pool:
            h = torch.nn.functional.max_pool2d(h, 2).contiguous()
    return h.flatten(1)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_spec_backbone_computes_the_dense_nchw_function_on_channels_last_maps(name):
    torch.manual_seed(0)
    net = FeatureNet(BACKBONES[name])
    layouts = []
    for layer in net.layers:
        if isinstance(layer, torch.nn.Conv2d):
            layer.register_forward_hook(lambda _m, _i, out: layouts.append(
                out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()))
    x = torch.randint(0, 256, (3, *BACKBONES[name].in_shape), dtype=torch.uint8)
    features = net(x)
    assert all(layouts)  # every convolution wrote a channels-last map (none of them left to the pooling to copy)
    assert features.shape == (3, net.out_features)
    assert torch.allclose(features, dense_nchw_features(net, x), rtol=1e-4, atol=1e-5)
