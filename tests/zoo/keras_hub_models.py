"""Small keras-hub vision models built offline from their constructors (no presets).

Used by `tests/zoo/test_keras_hub_zoo.py`; each entry builds a randomly
initialised model on 32x32 RGB inputs, small enough to prune and export in a
few seconds.
"""

IMAGE_SHAPE = (32, 32, 3)


def _resnet(keras_hub, pre_activation):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[16],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block",
        use_pre_activation=pre_activation,
        image_shape=IMAGE_SHAPE,
    )


def _efficientnet(keras_hub, block_types):
    return keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 2, 1],
        stackwise_input_filters=[16, 16, 24],
        stackwise_output_filters=[16, 24, 32],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25, 0.25],
        stackwise_strides=[1, 2, 2],
        stackwise_block_types=block_types,
        stackwise_width_coefficients=[1.0] * 3,
        stackwise_depth_coefficients=[1.0] * 3,
        input_shape=IMAGE_SHAPE,
        num_features=64,
    )


def _mobilenet(keras_hub):
    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16, 24], [48, 48]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=64,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=64,
        squeeze_and_excite=0.5,
        image_shape=IMAGE_SHAPE,
    )


def _cspnet(keras_hub):
    return keras_hub.models.CSPNetBackbone(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_depth=[1, 1],
        stackwise_strides=[2, 2],
        stackwise_num_filters=[16, 32],
        block_type="dark_block",
        stage_type="csp",
        expand_ratio=[2.0, 2.0],
        block_ratio=[1.0, 1.0],
        bottle_ratio=[0.5, 0.5],
        image_shape=IMAGE_SHAPE,
    )


def _vit(keras_hub):
    return keras_hub.models.ViTBackbone(
        image_shape=IMAGE_SHAPE, patch_size=8, num_layers=2, num_heads=4, hidden_dim=16, mlp_dim=32
    )


def _resnet_classifier(keras_hub):
    return keras_hub.models.ResNetImageClassifier(backbone=_resnet(keras_hub, False), num_classes=10)


def _xception(keras_hub):
    return keras_hub.models.XceptionBackbone(
        stackwise_conv_filters=[[16, 32], [32, 64], [64, 64]],
        stackwise_pooling=[True, True, False],
        image_shape=IMAGE_SHAPE,
    )


def _hgnetv2(keras_hub):
    return keras_hub.models.HGNetV2Backbone(
        depths=[1, 1],
        embedding_size=16,
        hidden_sizes=[32, 64],
        stem_channels=[3, 8, 16],
        hidden_act="relu",
        use_learnable_affine_block=False,
        stackwise_stage_filters=[(16, 8, 32, 1, 1, 3), (32, 16, 64, 1, 1, 3)],
        apply_downsample=[False, True],
        use_lightweight_conv_block=[False, False],
        image_shape=IMAGE_SHAPE,
    )


BUILDERS = {
    "ResNetV1": lambda hub: _resnet(hub, False),
    "ResNetV2": lambda hub: _resnet(hub, True),
    "EfficientNetV1": lambda hub: _efficientnet(hub, ["v1"] * 3),
    "EfficientNetV2": lambda hub: _efficientnet(hub, ["fused", "fused", "unfused"]),
    "DenseNet": lambda hub: hub.models.DenseNetBackbone(
        stackwise_num_repeats=[2, 2], image_shape=IMAGE_SHAPE, growth_rate=8
    ),
    "VGG": lambda hub: hub.models.VGGBackbone(
        stackwise_num_repeats=[2, 2], stackwise_num_filters=[32, 64], image_shape=IMAGE_SHAPE
    ),
    "CSPNet": _cspnet,
    "MobileNet": _mobilenet,
    "Xception": _xception,
    "HGNetV2": _hgnetv2,
    "ViT": _vit,
    "ResNetImageClassifier": _resnet_classifier,
}
