"""Building blocks: plain ``nn.Module``s and tensor functions, no configs and no I/O."""

from .attention import Attention, attention_kernel, matmul_attention
from .block import Block
from .conv_bn import ConvNormAct
from .conv_embed import ConvPatchEmbed
from .conv_mlp import DepthwiseConvMlp
from .drop_path import DropPath, drop_path, drop_path_rates
from .layer_scale import LayerScale
from .mlp import Mlp, make_act
from .mobilenet import InvertedResidual, make_divisible
from .patch_embed import LucidPatchEmbed, PatchEmbed, PatchEmbed1d, pad_to_multiple
from .patch_merging import PatchMerging
from .pooling import AttentionPoolLatent
from .pos_embed import resample_abs_pos_embed, resample_grid, sincos_2d
from .rel_pos import gather_bias, num_relative_positions, relative_position_index
from .rel_pos_resize import resize_rel_pos_table
from .sr_attention import SpatialReductionAttention
from .sr_block import SRABlock, run_blocks
from .window_attention import WindowAttention, shifted_window_mask, window_partition, window_reverse

__all__ = [
    "Attention",
    "AttentionPoolLatent",
    "Block",
    "ConvNormAct",
    "ConvPatchEmbed",
    "DepthwiseConvMlp",
    "DropPath",
    "InvertedResidual",
    "LayerScale",
    "LucidPatchEmbed",
    "Mlp",
    "PatchEmbed",
    "PatchEmbed1d",
    "PatchMerging",
    "SRABlock",
    "SpatialReductionAttention",
    "WindowAttention",
    "attention_kernel",
    "drop_path",
    "drop_path_rates",
    "gather_bias",
    "make_act",
    "make_divisible",
    "matmul_attention",
    "num_relative_positions",
    "pad_to_multiple",
    "relative_position_index",
    "resample_abs_pos_embed",
    "resample_grid",
    "resize_rel_pos_table",
    "run_blocks",
    "shifted_window_mask",
    "sincos_2d",
    "window_partition",
    "window_reverse",
]
