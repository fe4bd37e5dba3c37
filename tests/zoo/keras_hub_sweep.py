"""Tiny, randomly initialised configurations of every keras-hub model class (the keras-hub sweep).

`CONFIGURATIONS` maps a name (the class's name, or `Class-variant`) to an
`Entry`: `build(keras_hub)` constructs the model offline from its constructor
(no presets, no downloads; hidden widths 16-32, 2-4 heads, a couple of
layers, 32x32 images or the smallest size the family accepts, vocabulary 50,
sequences of 12 tokens), `sample(count=2)` makes inputs matching the model's
own input spec, `targets` is what to prune, `family` and `kind` ("vision",
"text", "decoder", "task", "other") group the results. Text task models are
built with `preprocessor=None`. Decoder language models (kind "decoder")
belong to a separate issue but stay in the list.

Every `*Backbone` and task class that `keras_hub.models` exports is either
here, in `NOT_CONSTRUCTIBLE` (name -> why it cannot be built offline at a
tiny size, found by trying), an alias of a class that is here (`ALIASES`), a
generic base class (`BASE_CLASSES`) or a component model exported for
assembling a backbone (`COMPONENTS`); `uncovered(keras_hub)` lists what is
in none of them.

The vision configurations of `keras_hub_models.py` are reused, not repeated. The runner is
`benchmarks/keras_hub_sweep.py`.
"""

import dataclasses
import inspect

import numpy as np
from keras_hub_models import BUILDERS, IMAGE_SHAPE

VOCAB = 50
LENGTH = 12
HIDDEN = 16
INTERMEDIATE = 32
HEADS = 4  # rate 0.3 takes one of 4 heads (of 2 it would take none)
RATE = 0.3
# Widths here are 16-32: rounding to the default multiple of 8 would turn a rate of 0.3
# (4.8 of 16 channels) into no channel at all, which real widths (64-4096) never see.
ROUND_TO = 1


@dataclasses.dataclass(frozen=True)
class Entry:
    """One configuration: how to build it, what it takes, what to prune.

    `inputs` maps an input name to `(shape without the batch axis, dtype,
    fill)`; the name `None` stands for a model with one unnamed input, whose
    sample is an array rather than a dict. `fill` is one of "uniform" (floats
    in [0, 1)), "tokens" (integers in [1, VOCAB)), "ones", "zeros",
    "positions" (0, 1, 2, ... along the last axis) or "true" (booleans).
    """

    build: object
    inputs: dict
    family: str
    kind: str
    targets: str = "all"
    note: str = ""

    def prune_arguments(self):
        """Returns the keyword arguments of `tfprune.prune` for this configuration (rate, targets, round_to)."""
        return {"rate": RATE, "targets": self.targets, "round_to": ROUND_TO}

    def sample(self, count=2, seed=0):
        """Returns `count` inputs in the model's input spec: an array, or a dict for several inputs."""
        rng = np.random.default_rng(seed)
        values = {}
        for name, (shape, dtype, fill) in self.inputs.items():
            full = (count, *shape)
            if fill == "uniform":
                value = rng.uniform(0.0, 1.0, full)
            elif fill == "tokens":
                value = rng.integers(1, VOCAB, full)
            elif fill == "ones":
                value = np.ones(full)
            elif fill == "zeros":
                value = np.zeros(full)
            elif fill == "positions":
                value = np.broadcast_to(np.arange(shape[-1]), full).copy()
            elif fill == "true":
                value = np.ones(full, bool)
            else:
                raise ValueError(f"unknown fill {fill!r}")
            values[name] = value.astype(dtype)
        return values[None] if list(values) == [None] else values


def _image(shape=IMAGE_SHAPE):
    return {None: (tuple(shape), "float32", "uniform")}


def _images(shape=IMAGE_SHAPE, name="images"):
    return {name: (tuple(shape), "float32", "uniform")}


def _text(segments=False, length=LENGTH, mask_dtype="int32"):
    spec = {"token_ids": ((length,), "int32", "tokens"), "padding_mask": ((length,), mask_dtype, "ones")}
    if segments:
        spec["segment_ids"] = ((length,), "int32", "zeros")
    return spec


def _masked(segments=False, positions=4):
    return {**_text(segments), "mask_positions": ((positions,), "int32", "positions")}


def _seq2seq(length=LENGTH, mask_dtype="int32"):
    return {
        "encoder_token_ids": ((length,), "int32", "tokens"),
        "encoder_padding_mask": ((length,), mask_dtype, "ones"),
        "decoder_token_ids": ((length,), "int32", "tokens"),
        "decoder_padding_mask": ((length,), mask_dtype, "ones"),
    }


# ---------------------------------------------------------------- vision backbones


def _deit(hub):
    return hub.models.DeiTBackbone(image_shape=IMAGE_SHAPE, patch_size=8, num_layers=2, num_heads=HEADS,
                                   hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE)  # fmt: skip


def _dinov2(hub, image=32, layers=2):
    return hub.models.DINOV2Backbone(patch_size=8, num_layers=layers, hidden_dim=HIDDEN,
                                     num_heads=HEADS, intermediate_dim=INTERMEDIATE, image_shape=(image, image, 3),
                                     position_embedding_shape=(image, image, 3), apply_layernorm=True)  # fmt: skip


def _dinov3(hub):
    return hub.models.DINOV3Backbone(patch_size=8, num_layers=2, hidden_dim=HIDDEN, num_heads=HEADS,
                                     intermediate_dim=INTERMEDIATE, image_shape=IMAGE_SHAPE)  # fmt: skip


def _mit(hub):
    return hub.models.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                  layerwise_sr_ratios=[4, 2], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3],
                                  layerwise_strides=[4, 2], image_shape=IMAGE_SHAPE, hidden_dims=[16, 32])  # fmt: skip


def _swin(hub):
    return hub.models.SwinTransformerBackbone(image_shape=IMAGE_SHAPE, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                              window_size=4, patch_size=4, mlp_ratio=2.0, drop_path=0.0)  # fmt: skip


def _vitdet(hub, image=32, patch=8, layers=2):
    return hub.models.ViTDetBackbone(hidden_size=HIDDEN, num_layers=layers, intermediate_dim=INTERMEDIATE,
                                     num_heads=HEADS, global_attention_layer_indices=[1],
                                     image_shape=(image, image, 3), patch_size=patch, num_output_channels=16,
                                     window_size=2)  # fmt: skip


def _mobilenetv5(hub):
    return hub.models.MobileNetV5Backbone(
        stackwise_block_types=[["er"], ["uir", "uir"]],
        stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[16], [24, 24]],
        stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]],
        stackwise_exp_ratios=[[2.0], [2.0, 2.0]],
        stackwise_se_ratios=[[0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [3, 3]],
        stackwise_dw_start_kernel_sizes=[[0], [0, 0]],
        stackwise_dw_end_kernel_sizes=[[0], [0, 0]],
        stackwise_exp_kernel_sizes=[[3], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0]],
        stackwise_num_heads=[[0], [0, 0]],
        stackwise_key_dims=[[0], [0, 0]],
        stackwise_value_dims=[[0], [0, 0]],
        stackwise_kv_strides=[[0], [0, 0]],
        stackwise_use_cpe=[[False], [False, False]],
        image_shape=IMAGE_SHAPE,
        stem_size=16,
        num_features=32,
        use_msfa=False,
    )


def _video_prism(hub):
    return hub.models.VideoPrismBackbone(num_frames=2, patch_size=8, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE,
                                         num_heads=HEADS, num_spatial_layers=1, num_temporal_layers=1,
                                         num_auxiliary_layers=1, image_shape=IMAGE_SHAPE)  # fmt: skip


def _clip_vision(hub, cls="CLIPVisionEncoder"):
    return getattr(hub.models, cls)(patch_size=8, hidden_dim=HIDDEN, num_layers=2, num_heads=HEADS,
                                    intermediate_dim=INTERMEDIATE, image_shape=IMAGE_SHAPE)  # fmt: skip


def _clip_text(hub, cls="CLIPTextEncoder"):
    extra = {"max_sequence_length": LENGTH}
    return getattr(hub.models, cls)(vocabulary_size=VOCAB, embedding_dim=HIDDEN, hidden_dim=HIDDEN, num_layers=2,
                                    num_heads=HEADS, intermediate_dim=INTERMEDIATE, **extra)  # fmt: skip


def _clip(hub, prefix="CLIP"):
    return getattr(hub.models, f"{prefix}Backbone")(vision_encoder=_clip_vision(hub, f"{prefix}VisionEncoder"),
                                                    text_encoder=_clip_text(hub, f"{prefix}TextEncoder"),
                                                    projection_dim=HIDDEN)  # fmt: skip


def _siglip(hub):
    return hub.models.SigLIPBackbone(vision_encoder=_clip_vision(hub, "SigLIPVisionEncoder"),
                                     text_encoder=_clip_text(hub, "SigLIPTextEncoder"))  # fmt: skip


def _pyramid_resnet(hub, stages=3, block_type="basic_block", image=None):
    return hub.models.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                     stackwise_num_filters=[64, 16, 16, 16][:stages],
                                     stackwise_num_blocks=[1] * stages, stackwise_num_strides=[1, 2, 2, 2][:stages],
                                     block_type=block_type, image_shape=(image, image, 3))  # fmt: skip


def _retinanet(hub):
    return hub.models.RetinaNetBackbone(image_encoder=_pyramid_resnet(hub), min_level=3, max_level=4, use_p5=False,
                                        image_shape=(64, 64, 3))  # fmt: skip


def _deeplab(hub):
    return hub.models.DeepLabV3Backbone(image_encoder=_pyramid_resnet(hub), spatial_pyramid_pooling_key="P4",
                                        upsampling_size=4, dilation_rates=[2, 4], low_level_feature_key="P2",
                                        projection_filters=16, image_shape=(64, 64, 3))  # fmt: skip


def _basnet(hub):
    # BASNet feeds its own 3x3 convolution (projection_filters wide) into the
    # encoder's first stage, and its bridge and decoder are 8x that wide.
    encoder = hub.models.ResNetBackbone(input_conv_filters=[16], input_conv_kernel_sizes=[3],
                                        stackwise_num_filters=[64, 16, 16, 16], stackwise_num_blocks=[1] * 4,
                                        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block")  # fmt: skip
    return hub.models.BASNetBackbone(image_encoder=encoder, num_classes=1, image_shape=(64, 64, 3),
                                     projection_filters=16)  # fmt: skip


def _segformer(hub):
    return hub.models.SegFormerBackbone(image_encoder=_mit(hub), projection_filters=16)


def _depth_anything(hub):
    return hub.models.DepthAnythingBackbone(image_encoder=_dinov2(hub, image=48, layers=4),
                                            reassemble_factors=[4, 2, 1, 0.5], neck_hidden_dims=[8, 16, 16, 16],
                                            fusion_hidden_dim=16, head_hidden_dim=8, head_in_index=-1,
                                            feature_keys=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip


def _dfine(hub):
    encoder = hub.models.HGNetV2Backbone(stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3],
                                         [16, 8, 32, 1, 1, 3]], apply_downsample=[False, True],
                                         use_lightweight_conv_block=[False, False], depths=[1, 1],
                                         hidden_sizes=[16, 32], embedding_size=8, use_learnable_affine_block=True,
                                         hidden_act="relu", image_shape=(32, 32, 3),
                                         out_features=["stage1", "stage2"])  # fmt: skip
    return hub.models.DFineBackbone(
        backbone=encoder, decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=0, num_labels=4,
        hidden_dim=16, learn_initial_query=False, num_queries=10, anchor_image_size=(32, 32), feat_strides=[4, 8],
        num_feature_levels=2, encoder_in_channels=[16, 32], encode_proj_layers=[1], num_attention_heads=2,
        encoder_ffn_dim=32, num_encoder_layers=1, hidden_expansion=0.5, depth_multiplier=0.5, eval_idx=-1,
        num_decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2],
        lqe_hidden_dim=16, num_lqe_layers=1, out_features=["stage1", "stage2"], image_shape=(32, 32, 3), seed=0,
    )  # fmt: skip


def _sam(hub):
    from keras_hub.src.models.sam.sam_mask_decoder import SAMMaskDecoder
    from keras_hub.src.models.sam.sam_prompt_encoder import SAMPromptEncoder

    prompt = SAMPromptEncoder(hidden_size=16, image_embedding_size=(8, 8), input_image_size=(64, 64),
                              mask_in_channels=16)  # fmt: skip
    decoder = SAMMaskDecoder(num_layers=2, hidden_size=16, intermediate_dim=32, num_heads=2, embedding_dim=16,
                             num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=8)  # fmt: skip
    # Three encoder blocks, not two: at 64x64 the patch convolution and the 8x8 position table
    # (4096 parameters, a third of the model with two blocks) dwarf the blocks, whereas in
    # SAM's real image encoders (12 to 32 blocks) they are about 4% of the parameters.
    return hub.models.SAMBackbone(image_encoder=_vitdet(hub, image=64, patch=8, layers=3), prompt_encoder=prompt,
                                  mask_decoder=decoder)  # fmt: skip


def _sam3(hub):
    from keras_hub.src.models.sam3.sam3_detr_decoder import SAM3DetrDecoder
    from keras_hub.src.models.sam3.sam3_detr_encoder import SAM3DetrEncoder
    from keras_hub.src.models.sam3.sam3_geometry_encoder import SAM3GeometryEncoder
    from keras_hub.src.models.sam3.sam3_mask_decoder import SAM3MaskDecoder
    from keras_hub.src.models.sam3.sam3_text_encoder import SAM3TextEncoder
    from keras_hub.src.models.sam3.sam3_vision_encoder import SAM3VisionEncoder

    return hub.models.SAM3PromptableConceptBackbone(
        vision_encoder=SAM3VisionEncoder(image_shape=(28, 28, 3), patch_size=14, num_layers=2, hidden_dim=16,
                                         intermediate_dim=32, num_heads=HEADS, fpn_hidden_dim=16,
                                         fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(42, 42, 3),
                                         window_size=2, global_attn_indexes=[1, 2]),
        text_encoder=SAM3TextEncoder(vocabulary_size=VOCAB, embedding_dim=16, hidden_dim=16, num_layers=2, num_heads=HEADS,
                                     intermediate_dim=32),
        geometry_encoder=SAM3GeometryEncoder(num_layers=2, hidden_dim=16, intermediate_dim=32, num_heads=HEADS, roi_size=7),
        detr_encoder=SAM3DetrEncoder(num_layers=2, hidden_dim=16, intermediate_dim=32, num_heads=HEADS),
        detr_decoder=SAM3DetrDecoder(image_shape=(28, 28, 3), patch_size=14, num_layers=2, hidden_dim=16,
                                     intermediate_dim=32, num_heads=HEADS, num_queries=8),
        mask_decoder=SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=16, num_heads=HEADS),
    )  # fmt: skip


def _parseq_preprocessor(hub):
    # PARSeqCausalLM reads its pad token from the tokenizer, whose default
    # vocabulary (94 characters and 3 special tokens) is built in.
    tokenizer = hub.models.PARSeqTokenizer(max_label_length=LENGTH - 1)
    return hub.models.PARSeqCausalLMPreprocessor(tokenizer=tokenizer, sequence_length=LENGTH - 1)


def _parseq(hub):
    encoder = hub.models.ViTBackbone(image_shape=(16, 32, 3), patch_size=(4, 8), num_layers=1, num_heads=HEADS,
                                     hidden_dim=HIDDEN, mlp_dim=INTERMEDIATE, use_class_token=False,
                                     name="image_encoder")  # fmt: skip
    return hub.models.PARSeqBackbone(image_encoder=encoder, vocabulary_size=97, max_label_length=LENGTH - 1,
                                     decoder_hidden_dim=HIDDEN, num_decoder_layers=1, num_decoder_heads=HEADS,
                                     decoder_mlp_dim=INTERMEDIATE, dropout_rate=0.0, attention_dropout=0.0)  # fmt: skip


# ---------------------------------------------------------------- text backbones


_ENCODER = dict(vocabulary_size=VOCAB, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN,
                intermediate_dim=INTERMEDIATE)  # fmt: skip


def _bert(hub):
    return hub.models.BertBackbone(**_ENCODER, max_sequence_length=LENGTH)


def _albert(hub):
    return hub.models.AlbertBackbone(**_ENCODER, embedding_dim=HIDDEN, max_sequence_length=LENGTH)


def _roberta(hub, cls="RobertaBackbone"):
    return getattr(hub.models, cls)(**_ENCODER, max_sequence_length=LENGTH)


def _deberta(hub):
    return hub.models.DebertaV3Backbone(**_ENCODER, max_sequence_length=LENGTH, bucket_size=6)


def _electra(hub):
    kwargs = {**_ENCODER, "vocab_size": VOCAB}
    del kwargs["vocabulary_size"]
    return hub.models.ElectraBackbone(**kwargs, embedding_dim=HIDDEN, max_sequence_length=LENGTH)


def _esm(hub):
    return hub.models.ESM2Backbone(**_ENCODER, max_sequence_length=LENGTH)


def _fnet(hub):
    return hub.models.FNetBackbone(vocabulary_size=VOCAB, num_layers=2, hidden_dim=HIDDEN,
                                   intermediate_dim=INTERMEDIATE, max_sequence_length=LENGTH)  # fmt: skip


def _roformer(hub):
    return hub.models.RoformerV2Backbone(**_ENCODER, head_size=HIDDEN // HEADS)


def _xlnet(hub):
    return hub.models.XLNetBackbone(**_ENCODER)


def _bart(hub):
    return hub.models.BartBackbone(**_ENCODER, max_sequence_length=LENGTH)


def _t5(hub):
    return hub.models.T5Backbone(**_ENCODER, key_value_dim=8)


def _t5gemma(hub, cls="T5GemmaBackbone"):
    side = dict(hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE, num_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=8, layer_types=["sliding_attention", "full_attention"])  # fmt: skip
    kwargs = {f"{part}_{key}": value for part in ("encoder", "decoder") for key, value in side.items()}
    return getattr(hub.models, cls)(vocabulary_size=VOCAB, sliding_window=4, cross_attention_hidden_size=HIDDEN,
                                    **kwargs)  # fmt: skip


def _edrec(hub):
    return hub.models.EdRecBackbone(vocab_size=VOCAB, num_layers_enc=1, num_layers_dec=1, hidden_dim=HIDDEN,
                                    intermediate_dim=INTERMEDIATE, num_heads=HEADS)  # fmt: skip


def _whisper(hub):
    return hub.models.WhisperBackbone(**_ENCODER, num_mels=8, max_encoder_sequence_length=16,
                                      max_decoder_sequence_length=LENGTH)  # fmt: skip


def _moonshine(hub):
    return hub.models.MoonshineBackbone(vocabulary_size=VOCAB, filter_dim=HIDDEN, encoder_num_layers=1,
                                        decoder_num_layers=1, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE,
                                        encoder_num_heads=HEADS, decoder_num_heads=HEADS)  # fmt: skip


# ---------------------------------------------------------------- decoder backbones

# Grouped-query attention: HEADS query heads over one key/value head, so that rate 0.3 takes one
# query head of each key/value group (Llama 3.2 1B has 4 query heads per key/value head).
_GQA = dict(vocabulary_size=VOCAB, num_layers=2, num_query_heads=HEADS, num_key_value_heads=1, hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE)  # fmt: skip


def _decoder(hub, cls, **kwargs):
    return getattr(hub.models, cls)(**kwargs)


def _gpt2(hub):
    return hub.models.GPT2Backbone(**_ENCODER, max_sequence_length=LENGTH)


def _opt(hub):
    return hub.models.OPTBackbone(**_ENCODER, max_sequence_length=LENGTH)


def _bloom(hub):
    return hub.models.BloomBackbone(**_ENCODER)


def _gpt_neo_x(hub):
    # Heads of HIDDEN // HEADS = 4: the default rotary_percentage 0.25 would rotate 1 (odd) dimension.
    return hub.models.GPTNeoXBackbone(**_ENCODER, max_sequence_length=LENGTH, rotary_percentage=0.5)


def _falcon(hub):
    kwargs = {**_ENCODER, "num_attention_heads": HEADS}
    del kwargs["num_heads"]
    return hub.models.FalconBackbone(**kwargs)


def _gemma(hub):
    # Gemma's intermediate_dim counts its gate and up projections together: each has half.
    return hub.models.GemmaBackbone(**{**_GQA, "intermediate_dim": 2 * INTERMEDIATE}, head_dim=8)


def _gemma3(hub):
    return hub.models.Gemma3Backbone(**_GQA, head_dim=8, image_size=16, vision_encoder=None)


def _gemma3n(hub):
    return hub.models.Gemma3nBackbone(
        text_vocab_size=VOCAB, text_hidden_size=HIDDEN, num_hidden_layers=1, pad_token_id=0, num_attention_heads=HEADS,
        num_key_value_heads=1, head_dim=8, intermediate_size=[INTERMEDIATE], hidden_activation="gelu_approximate",
        layer_types=["full_attention"], sliding_window=4, rope_theta=10000.0, max_position_embeddings=LENGTH,
        vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=2, altup_num_inputs=2, laurel_rank=1,
    )  # fmt: skip


def _gemma4(hub):
    return hub.models.Gemma4Backbone(**_GQA, head_dim=8, image_size=16, sliding_window_size=8,
                                     sliding_window_pattern=2)  # fmt: skip


def _llama(hub, cls="LlamaBackbone"):
    return getattr(hub.models, cls)(**_GQA)


def _mistral(hub):
    return hub.models.MistralBackbone(**_GQA, sliding_window=8)


def _mixtral(hub):
    return hub.models.MixtralBackbone(**_GQA, num_experts=4, top_k=2, sliding_window=8)


def _phi3(hub):
    return hub.models.Phi3Backbone(**_GQA, max_sequence_length=LENGTH, pretraining_sequence_length=LENGTH)


def _qwen(hub):
    return hub.models.Qwen2Backbone(**_GQA)


def _qwen3(hub):
    return hub.models.Qwen3Backbone(**_GQA, head_dim=8)


def _qwen_moe(hub):
    return hub.models.QwenMoeBackbone(**_GQA, moe_intermediate_dim=16, shared_expert_intermediate_dim=16,
                                      num_experts=4, top_k=2)  # fmt: skip


def _qwen3_moe(hub):
    return hub.models.Qwen3MoeBackbone(**_GQA, moe_intermediate_dim=16, num_experts=4, top_k=2, head_dim=8)


_LINEAR_ATTENTION = dict(layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2,
                         linear_num_value_heads=2, linear_key_head_dim=8, linear_value_head_dim=8)  # fmt: skip


def _qwen3_5(hub):
    return hub.models.Qwen3_5Backbone(**_GQA, head_dim=8, **_LINEAR_ATTENTION)


def _qwen3_5_moe(hub):
    kwargs = {**_GQA}
    del kwargs["intermediate_dim"]
    return hub.models.Qwen3_5MoeBackbone(**kwargs, head_dim=8, moe_intermediate_dim=16,
                                         shared_expert_intermediate_size=16, num_experts=4, top_k=2,
                                         **_LINEAR_ATTENTION)  # fmt: skip


def _gpt_oss(hub):
    return hub.models.GptOssBackbone(**_GQA, num_experts=4, top_k=2, sliding_window=8, head_dim=8)


def _smollm3(hub):
    return hub.models.SmolLM3Backbone(vocabulary_size=VOCAB, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE,
                                      num_layers=2, num_attention_heads=HEADS, num_key_value_heads=1,
                                      attention_bias=False, attention_dropout=0.0,
                                      rope_layer_enabled_list=[True, False], layer_types=["attention", "attention"],
                                      mlp_bias=False, layer_norm_epsilon=1e-5, max_position_embeddings=LENGTH,
                                      rope_theta=10000.0, partial_rotary_factor=1.0)  # fmt: skip


def _rwkv7(hub):
    # HEADS heads (head_size 8 gave 2, of which rate 0.3 takes none).
    return hub.models.RWKV7Backbone(hidden_size=HIDDEN, head_size=HIDDEN // HEADS, num_layers=2,
                                    vocabulary_size=VOCAB, intermediate_dim=INTERMEDIATE, gate_lora=8, mv_lora=8,
                                    aaa_lora=8, decay_lora=8)  # fmt: skip


def _pali_gemma(hub):
    return hub.models.PaliGemmaBackbone(**_GQA, head_dim=8, image_size=16, vit_patch_size=4, vit_num_heads=2,
                                        vit_hidden_dim=HIDDEN, vit_num_layers=1, vit_intermediate_dim=INTERMEDIATE)  # fmt: skip


def _blip2(hub, t5=False):
    vision = hub.models.BLIP2VisionEncoder(image_size=32, patch_size=8, num_layers=1, num_heads=HEADS,
                                           hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE, use_patch_bias=True,
                                           use_class_token=True, use_mha_bias=True, use_mlp_bias=True,
                                           dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_range=0.02)  # fmt: skip
    qformer = hub.models.BLIP2QFormer(num_query_tokens=2, num_layers=1, num_heads=HEADS, hidden_dim=HIDDEN,
                                      intermediate_dim=INTERMEDIATE, vision_dim=HIDDEN, cross_attention_frequency=1,
                                      dropout=0.0, layer_norm_epsilon=1e-6)  # fmt: skip
    if t5:
        # HEADS (4), not 2: rate 0.3 takes no head of 2, and Flan-T5's smallest model has 8.
        language = hub.models.BLIP2FlanT5(vocabulary_size=VOCAB, num_layers=1, num_heads=HEADS, hidden_dim=HIDDEN,
                                          intermediate_dim=INTERMEDIATE, num_query_tokens=2,
                                          qformer_hidden_dim=HIDDEN, key_value_dim=8, dropout=0.0)  # fmt: skip
    else:
        language = hub.models.BLIP2CustomOPT(vocabulary_size=VOCAB, num_layers=1, num_heads=HEADS, hidden_dim=HIDDEN,
                                             intermediate_dim=INTERMEDIATE, num_query_tokens=2, dropout=0.0,
                                             max_sequence_length=LENGTH + 2, qformer_hidden_dim=HIDDEN)  # fmt: skip
    return hub.models.BLIP2Backbone(vision_encoder=vision, qformer=qformer, language_model=language)


# ---------------------------------------------------------------- diffusion


def _vae(hub):
    from keras_hub.src.models.vae.vae_backbone import VAEBackbone

    return VAEBackbone([32, 32], [1, 1], [32, 32], [1, 1], sampler_method="mode", name="vae")


def _sd3(hub):
    clip_l = hub.models.CLIPTextEncoder(VOCAB, 16, 16, 2, 2, 32, "quick_gelu", -2, name="clip_l")
    clip_g = hub.models.CLIPTextEncoder(VOCAB, 16, 16, 2, 2, 32, "gelu", -2, name="clip_g")
    return hub.models.StableDiffusion3Backbone(mmdit_patch_size=2, mmdit_hidden_dim=32, mmdit_num_layers=1,
                                               mmdit_num_heads=2, mmdit_position_size=32, mmdit_qk_norm=None,
                                               mmdit_dual_attention_indices=None, vae=_vae(hub), clip_l=clip_l,
                                               clip_g=clip_g, latent_channels=16, image_shape=(32, 32, 3))  # fmt: skip


def _flux(hub):
    return hub.models.FluxBackbone(input_channels=16, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1,
                                   depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10_000, use_bias=True,
                                   guidance_embed=True, image_shape=(8, 16), text_shape=(8, 16),
                                   image_ids_shape=(8, 3), text_ids_shape=(8, 3), y_shape=(16,))  # fmt: skip


# ---------------------------------------------------------------- task wrappers


def _task(cls, backbone, preprocessor=None, **kwargs):
    def build(hub):
        task = getattr(hub.models, cls)
        arguments = {"backbone": backbone(hub), **kwargs}
        if preprocessor is not None:
            arguments["preprocessor"] = preprocessor(hub)
        if "preprocessor" in inspect.signature(task.__init__).parameters:
            arguments.setdefault("preprocessor", None)
        return task(**arguments)

    return build


def _classifier(cls, backbone, **kwargs):
    return _task(cls, backbone, num_classes=4, **kwargs)


IMAGE = _image()
TEXT = _text()
TEXT_SEGMENTS = _text(segments=True)

CONFIGURATIONS = {}


# Families whose channels are all a normalised hidden width (`targets="all"` leaves those
# out, as removing one changes the normalisation's statistics): they prune on "hidden".
FAMILY_TARGETS = {
    "mobilenetv5": "hidden",  # every convolution feeds an RmsNorm2d over its channels
    # The tiny MMDiT's joint block (MLP units 2% of the model, two heads: none at rate 0.3) is small
    # beside its hidden widths: the context embedding from the 4096-wide text features (32%) and the
    # position table (8%); with targets="all" 3.1% of the parameters go, with "hidden" 13%.
    "stable_diffusion_3": "hidden",
}


def _add(name, build, inputs, family, kind, **kwargs):
    assert name not in CONFIGURATIONS, name
    kwargs.setdefault("targets", FAMILY_TARGETS.get(family, "all"))
    CONFIGURATIONS[name] = Entry(build=build, inputs=inputs, family=family, kind=kind, **kwargs)


# Vision backbones and their image classifiers.
for _name, _builder, _family, _classifier_name in [
    ("ResNetBackbone", BUILDERS["ResNetV1"], "resnet", "ResNetImageClassifier"),
    ("EfficientNetBackbone", BUILDERS["EfficientNetV1"], "efficientnet", "EfficientNetImageClassifier"),
    ("DenseNetBackbone", BUILDERS["DenseNet"], "densenet", "DenseNetImageClassifier"),
    ("VGGBackbone", BUILDERS["VGG"], "vgg", "VGGImageClassifier"),
    ("CSPNetBackbone", BUILDERS["CSPNet"], "cspnet", "CSPNetImageClassifier"),
    ("MobileNetBackbone", BUILDERS["MobileNet"], "mobilenet", "MobileNetImageClassifier"),
    ("XceptionBackbone", BUILDERS["Xception"], "xception", "XceptionImageClassifier"),
    ("HGNetV2Backbone", BUILDERS["HGNetV2"], "hgnetv2", "HGNetV2ImageClassifier"),
    ("ViTBackbone", BUILDERS["ViT"], "vit", "ViTImageClassifier"),
    ("DeiTBackbone", _deit, "deit", "DeiTImageClassifier"),
    ("MiTBackbone", _mit, "mit", "MiTImageClassifier"),
    ("SwinTransformerBackbone", _swin, "swin_transformer", "SwinTransformerImageClassifier"),
    ("MobileNetV5Backbone", _mobilenetv5, "mobilenetv5", "MobileNetV5ImageClassifier"),
]:
    _add(_name, _builder, IMAGE, _family, "vision")
    _extra = {"pooling_hidden_dim": 16} if _classifier_name == "VGGImageClassifier" else {}
    _extra.update({"num_features": 32} if _classifier_name == "MobileNetImageClassifier" else {})
    _extra.update({"head_hidden_size": 32} if _classifier_name == "MobileNetV5ImageClassifier" else {})
    _add(_classifier_name, _classifier(_classifier_name, _builder, **_extra), IMAGE, _family, "task")

_add("ResNetBackbone-v2", BUILDERS["ResNetV2"], IMAGE, "resnet", "vision", note="pre-activation")
_add("EfficientNetBackbone-v2", BUILDERS["EfficientNetV2"], IMAGE, "efficientnet", "vision", note="fused blocks")
_add("DINOV2Backbone", _dinov2, _images(), "dinov2", "vision")
_add("DINOV3Backbone", _dinov3, _images(name="pixel_values"), "dinov3", "vision")
_add("ViTDetBackbone", _vitdet, IMAGE, "vit_det", "vision")
_add("VideoPrismBackbone", _video_prism, _image((2, 32, 32, 3)), "video_prism", "vision")
_add("CLIPVisionEncoder", _clip_vision, _images(), "clip", "vision")
_add("SigLIPVisionEncoder", lambda hub: _clip_vision(hub, "SigLIPVisionEncoder"), _images(), "siglip", "vision")
_add("MetaCLIP2VisionEncoder", lambda hub: _clip_vision(hub, "MetaCLIP2VisionEncoder"), _images(), "metaclip_2",
     "vision")  # fmt: skip

# Detection, segmentation, depth: feature-pyramid backbones on 64x64 (32x32 where it fits).
_IMAGE64 = _image((64, 64, 3))
_add("RetinaNetBackbone", _retinanet, _IMAGE64, "retinanet", "vision")
_add("RetinaNetObjectDetector", _classifier("RetinaNetObjectDetector", _retinanet), _IMAGE64, "retinanet", "task")
_add("DeepLabV3Backbone", _deeplab, _IMAGE64, "deeplab_v3", "vision")
_add("DeepLabV3ImageSegmenter", _classifier("DeepLabV3ImageSegmenter", _deeplab), _IMAGE64, "deeplab_v3", "task")
_add("BASNetBackbone", _basnet, _IMAGE64, "basnet", "vision")
_add("BASNetImageSegmenter", _task("BASNetImageSegmenter", _basnet), _IMAGE64, "basnet", "task")
_add("SegFormerBackbone", _segformer, IMAGE, "segformer", "vision")
_add("SegFormerImageSegmenter", _classifier("SegFormerImageSegmenter", _segformer), IMAGE, "segformer", "task")
_add("DepthAnythingBackbone", _depth_anything, _image((48, 48, 3)), "depth_anything", "vision")
_add("DepthAnythingDepthEstimator", _task("DepthAnythingDepthEstimator", _depth_anything,
     depth_estimation_type="relative"), _image((48, 48, 3)), "depth_anything", "task")  # fmt: skip
_add("DFineBackbone", _dfine, IMAGE, "d_fine", "vision")
_add("DFineObjectDetector", _classifier("DFineObjectDetector", _dfine), IMAGE, "d_fine", "task")
_SAM_INPUTS = {
    "images": ((64, 64, 3), "float32", "uniform"),
    "points": ((1, 2), "float32", "uniform"),
    "labels": ((1,), "float32", "ones"),
    "boxes": ((1, 2, 2), "float32", "uniform"),
    "masks": ((0, 64, 64, 1), "float32", "zeros"),
}
_add("SAMBackbone", _sam, _SAM_INPUTS, "sam", "vision")
_add("SAMImageSegmenter", _task("SAMImageSegmenter", _sam), _SAM_INPUTS, "sam", "task")
_SAM3_INPUTS = {
    "pixel_values": ((28, 28, 3), "float32", "uniform"),
    "token_ids": ((32,), "int32", "tokens"),
    "padding_mask": ((32,), "int32", "ones"),
    "boxes": ((1, 5), "float32", "uniform"),
    "box_labels": ((1,), "int32", "ones"),
}
_add("SAM3PromptableConceptBackbone", _sam3, _SAM3_INPUTS, "sam3", "other")
_add("SAM3PromptableConceptImageSegmenter", _task("SAM3PromptableConceptImageSegmenter", _sam3), _SAM3_INPUTS,
     "sam3", "task")  # fmt: skip

# Image-text models.
_TOKENS = {"token_ids": ((LENGTH,), "int32", "tokens")}  # no padding mask
_IMAGE_TEXT = {**_images(), **_TOKENS}
_add("CLIPTextEncoder", _clip_text, _TOKENS, "clip", "text")
_add("SigLIPTextEncoder", lambda hub: _clip_text(hub, "SigLIPTextEncoder"), _TOKENS, "siglip", "text")
_add("MetaCLIP2TextEncoder", lambda hub: _clip_text(hub, "MetaCLIP2TextEncoder"), _TOKENS, "metaclip_2", "text")
_add("CLIPBackbone", _clip, _IMAGE_TEXT, "clip", "other")
_add("SigLIPBackbone", _siglip, _IMAGE_TEXT, "siglip", "other")
_add("MetaCLIP2Backbone", lambda hub: _clip(hub, "MetaCLIP2"), _IMAGE_TEXT, "metaclip_2", "other")

# Encoder text models and their tasks.
for _family, _builder, _segments, _prefix in [
    ("albert", _albert, True, "Albert"),
    ("bert", _bert, True, "Bert"),
    ("deberta_v3", _deberta, False, "DebertaV3"),
    ("distil_bert", lambda hub: _roberta(hub, "DistilBertBackbone"), False, "DistilBert"),
    ("f_net", _fnet, True, "FNet"),
    ("roberta", _roberta, False, "Roberta"),
    ("roformer_v2", _roformer, True, "RoformerV2"),
    ("xlm_roberta", lambda hub: _roberta(hub, "XLMRobertaBackbone"), False, "XLMRoberta"),
]:
    _inputs = _text(_segments)
    if _family in ("f_net", "roformer_v2"):  # no padding mask
        _inputs = {key: value for key, value in _inputs.items() if key != "padding_mask"}
    _add(f"{_prefix}Backbone", _builder, _inputs, _family, "text")
    _add(f"{_prefix}TextClassifier", _classifier(f"{_prefix}TextClassifier", _builder), _inputs, _family, "task")
    _add(f"{_prefix}MaskedLM", _task(f"{_prefix}MaskedLM", _builder),
         {**_inputs, "mask_positions": ((4,), "int32", "positions")}, _family, "task")  # fmt: skip

_add("BertTextEmbedder", _task("BertTextEmbedder", _bert), TEXT_SEGMENTS, "bert", "task")
_add("XLMRobertaTextEmbedder", _task("XLMRobertaTextEmbedder", lambda hub: _roberta(hub, "XLMRobertaBackbone")),
     TEXT, "xlm_roberta", "task")  # fmt: skip
_add("ESM2Backbone", _esm, {"token_ids": ((LENGTH,), "int32", "tokens")}, "esm", "text")
_add("ESMProteinClassifier", _classifier("ESMProteinClassifier", _esm), {"token_ids": ((LENGTH,), "int32", "tokens")},
     "esm", "task")  # fmt: skip
_add("ESM2MaskedPLM", _task("ESM2MaskedPLM", _esm), {"token_ids": ((LENGTH,), "int32", "tokens"),
     "mask_positions": ((4,), "int32", "positions")}, "esm", "task")  # fmt: skip
_add("ElectraBackbone", _electra, TEXT_SEGMENTS, "electra", "text")
_add("XLNetBackbone", _xlnet, TEXT_SEGMENTS, "xlnet", "text")

# Encoder-decoder text models.
_SEQ2SEQ = _seq2seq()
for _family, _builder, _prefix in [("bart", _bart, "Bart"), ("t5", _t5, "T5"), ("t5gemma", _t5gemma, "T5Gemma"),
                                   ("t5gemma2", lambda hub: _t5gemma(hub, "T5Gemma2Backbone"), "T5Gemma2"),
                                   ("edrec", _edrec, "EdRec")]:  # fmt: skip
    _inputs = _seq2seq(mask_dtype="bool") if _family == "edrec" else _SEQ2SEQ
    _add(f"{_prefix}Backbone", _builder, _inputs, _family, "text")
    _add(f"{_prefix}Seq2SeqLM", _task(f"{_prefix}Seq2SeqLM", _builder), _inputs, _family, "task")

# Audio.
_WHISPER = {"encoder_features": ((16, 8), "float32", "uniform"), "decoder_token_ids": ((LENGTH,), "int32", "tokens"),
            "decoder_padding_mask": ((LENGTH,), "int32", "ones")}  # fmt: skip
_add("WhisperBackbone", _whisper, _WHISPER, "whisper", "other")
_MOONSHINE = {"encoder_input_values": ((1600, 1), "float32", "uniform"), "encoder_padding_mask": ((1600,), "bool", "true"),
              "decoder_token_ids": ((LENGTH,), "int32", "tokens"), "decoder_padding_mask": ((LENGTH,), "bool", "true")}  # fmt: skip
_add("MoonshineBackbone", _moonshine, _MOONSHINE, "moonshine", "other")
_add("MoonshineAudioToText", _task("MoonshineAudioToText", _moonshine), _MOONSHINE, "moonshine", "task")

# Decoder language models (a separate issue) and their causal LMs.
_DECODER_INPUTS = {
    "gemma3n": _text(mask_dtype="bool"),
    "gemma4": {**TEXT, "position_ids": ((LENGTH,), "int32", "positions")},
}
for _family, _builder, _prefix in [
    ("bloom", _bloom, "Bloom"),
    ("falcon", _falcon, "Falcon"),
    ("gpt2", _gpt2, "GPT2"),
    ("gpt_neo_x", _gpt_neo_x, "GPTNeoX"),
    ("gemma", _gemma, "Gemma"),
    ("gemma3", _gemma3, "Gemma3"),
    ("gemma3n", _gemma3n, "Gemma3n"),
    ("gemma4", _gemma4, "Gemma4"),
    ("gpt_oss", _gpt_oss, "GptOss"),
    ("llama", _llama, "Llama"),
    ("llama3", lambda hub: _llama(hub, "Llama3Backbone"), "Llama3"),
    ("mistral", _mistral, "Mistral"),
    ("mixtral", _mixtral, "Mixtral"),
    ("opt", _opt, "OPT"),
    ("phi3", _phi3, "Phi3"),
    ("qwen", _qwen, "Qwen2"),
    ("qwen3", _qwen3, "Qwen3"),
    ("qwen_moe", _qwen_moe, "QwenMoe"),
    ("qwen3_moe", _qwen3_moe, "Qwen3Moe"),
    ("qwen3_5", _qwen3_5, "Qwen3_5"),
    ("qwen3_5_moe", _qwen3_5_moe, "Qwen3_5Moe"),
    ("rwkv7", _rwkv7, "RWKV7"),
    ("smollm3", _smollm3, "SmolLM3"),
]:
    _inputs = _DECODER_INPUTS.get(_family, TEXT)
    _add(f"{_prefix}Backbone", _builder, _inputs, _family, "decoder")
    _add(f"{_prefix}CausalLM", _task(f"{_prefix}CausalLM", _builder), _inputs, _family, "decoder")

_add("Gemma3TextEmbedder", _task("Gemma3TextEmbedder", _gemma3), TEXT, "gemma3", "decoder")
_add("Qwen3TextEmbedder", _task("Qwen3TextEmbedder", _qwen3), TEXT, "qwen3", "decoder")
_PALI = {**_images((16, 16, 3)), **_text(), "response_mask": ((LENGTH,), "int32", "zeros")}
_add("PaliGemmaBackbone", _pali_gemma, _PALI, "pali_gemma", "decoder")
_add("PaliGemmaCausalLM", _task("PaliGemmaCausalLM", _pali_gemma), _PALI, "pali_gemma", "decoder")
_BLIP2 = {**_images(), **_text()}
_add("BLIP2Backbone", _blip2, _BLIP2, "blip2", "decoder")
_add("BLIP2CausalLM", _task("BLIP2CausalLM", _blip2), _BLIP2, "blip2", "decoder")
_BLIP2_T5 = {**_images(), **_seq2seq()}
_add("BLIP2Backbone-flan_t5", lambda hub: _blip2(hub, t5=True), _BLIP2_T5, "blip2", "other",
     note="Flan-T5 encoder-decoder language model")  # fmt: skip
_add("BLIP2Seq2SeqLM", _task("BLIP2Seq2SeqLM", lambda hub: _blip2(hub, t5=True)), _BLIP2_T5, "blip2", "task")
_PARSEQ = {**_images((16, 32, 3)), **_text()}
_add("PARSeqBackbone", _parseq, _PARSEQ, "parseq", "other")
_add("PARSeqCausalLM", _task("PARSeqCausalLM", _parseq, preprocessor=_parseq_preprocessor), _PARSEQ, "parseq",
     "task")  # fmt: skip

# Diffusion.
_SD3 = {"images": ((32, 32, 3), "float32", "uniform"), "latents": ((4, 4, 16), "float32", "uniform"),
        "clip_l_token_ids": ((5,), "int32", "tokens"), "clip_l_negative_token_ids": ((5,), "int32", "tokens"),
        "clip_g_token_ids": ((5,), "int32", "tokens"), "clip_g_negative_token_ids": ((5,), "int32", "tokens"),
        "num_steps": ((), "int32", "ones"), "guidance_scale": ((), "float32", "ones")}  # fmt: skip
_add("StableDiffusion3Backbone", _sd3, _SD3, "stable_diffusion_3", "other")
_FLUX = {"image": ((8, 16), "float32", "uniform"), "image_ids": ((8, 3), "float32", "ones"),
         "text": ((8, 16), "float32", "uniform"), "text_ids": ((8, 3), "float32", "ones"),
         "y": ((16,), "float32", "uniform"), "timesteps": ((), "float32", "ones"), "guidance": ((), "float32", "ones")}  # fmt: skip
_add("FluxBackbone", _flux, _FLUX, "flux", "other")
_add("FluxTextToImage", _task("FluxTextToImage", _flux), _FLUX, "flux", "task")
for _task_name in ("StableDiffusion3TextToImage", "StableDiffusion3ImageToImage", "StableDiffusion3Inpaint"):
    _add(_task_name, _task(_task_name, _sd3), _SD3, "stable_diffusion_3", "task")


NOT_CONSTRUCTIBLE = {
    "Gemma4AssistantCausalLM": "A multi-token-prediction draft model: built on a tiny Gemma4Backbone it raises "
    "NotImplementedError when called on its own ('requires a target model and cannot be called standalone').",
}

# Two exported names for one class: the sweep builds the first.
ALIASES = {
    "AlbertClassifier": "AlbertTextClassifier",
    "BertClassifier": "BertTextClassifier",
    "DebertaV3Classifier": "DebertaV3TextClassifier",
    "DistilBertClassifier": "DistilBertTextClassifier",
    "FNetClassifier": "FNetTextClassifier",
    "RobertaClassifier": "RobertaTextClassifier",
    "XLMRobertaClassifier": "XLMRobertaTextClassifier",
    "ESMBackbone": "ESM2Backbone",
    "ESMMaskedPLM": "ESM2MaskedPLM",
    "QwenBackbone": "Qwen2Backbone",
    "QwenCausalLM": "Qwen2CausalLM",
    "SmolLMBackbone": "SmolLM3Backbone",
    "SmolLMCausalLM": "SmolLM3CausalLM",
    "Classifier": "TextClassifier",
    "ObjectDetector": "ImageObjectDetector",
}

# Abstract bases every family's class derives from; nothing of their own to prune.
BASE_CLASSES = (
    "Backbone", "FeaturePyramidBackbone", "Task", "CausalLM", "Seq2SeqLM", "MaskedLM", "TextClassifier",
    "TextEmbedder", "ImageClassifier", "ImageSegmenter", "ImageObjectDetector", "DepthEstimator",
    "TextToImage", "ImageToImage", "Inpaint",
)  # fmt: skip

# Sub-models exported so that a backbone can be assembled; swept inside that backbone.
COMPONENTS = {
    "BLIP2VisionEncoder": "BLIP2Backbone",
    "BLIP2QFormer": "BLIP2Backbone",
    "BLIP2CustomOPT": "BLIP2Backbone",
    "BLIP2FlanT5": "BLIP2Seq2SeqLM",
    "Gemma3VisionEncoder": "Gemma3Backbone",
    "Gemma4VisionEncoder": "Gemma4Backbone",
    "Gemma4AudioEncoder": "Gemma4Backbone",
}


def model_classes(keras_hub):
    """Names in `keras_hub.models` of every backbone, task and component model class."""
    import keras
    from keras_hub.src.models.preprocessor import Preprocessor

    names = []
    for name in dir(keras_hub.models):
        value = getattr(keras_hub.models, name)
        if inspect.isclass(value) and issubclass(value, keras.Model) and not issubclass(value, Preprocessor):
            names.append(name)
    return names


def uncovered(keras_hub):
    """Model classes exported by keras-hub that this file neither configures nor explains."""
    known = {name.split("-")[0] for name in CONFIGURATIONS}
    known |= set(NOT_CONSTRUCTIBLE) | set(ALIASES) | set(BASE_CLASSES) | set(COMPONENTS)
    return sorted(set(model_classes(keras_hub)) - known)


def check_sample(entry, model):
    """Returns a list of the differences between `entry.sample()` and the model's input spec (empty if none)."""
    sample = entry.sample()
    structure = getattr(model, "_inputs_struct", model.inputs)
    if isinstance(structure, (list, tuple)) and len(structure) > 1:  # named inputs in a list
        structure = {tensor.name: tensor for tensor in structure}
    if isinstance(structure, dict) != isinstance(sample, dict):
        return [f"sample is a {type(sample).__name__}, the model takes {structure}"]
    if not isinstance(sample, dict):
        tensors = structure if isinstance(structure, (list, tuple)) else [structure]
        if len(tensors) != 1:
            return [f"one input sampled, the model takes {len(tensors)}"]
        structure, sample = {"input": tensors[0]}, {"input": sample}
    problems = []
    missing, extra = set(structure) - set(sample), set(sample) - set(structure)
    if missing or extra:
        problems.append(f"inputs missing {sorted(missing)}, not taken {sorted(extra)}")
    for name in set(structure) & set(sample):
        tensor, value = structure[name], sample[name]
        shape = tuple(tensor.shape)
        if len(shape) != value.ndim or any(d is not None and d != v for d, v in zip(shape[1:], value.shape[1:])):
            problems.append(f"{name}: shape {value.shape} for {shape}")
        if str(tensor.dtype) != str(value.dtype):
            problems.append(f"{name}: dtype {value.dtype} for {tensor.dtype}")
    return problems
