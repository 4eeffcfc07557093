"""Seeing inside a ViT: attention maps, rollout, and the paper's analysis figures (Fig. 7, Fig. 11).

``maps`` is tensor arithmetic (rollout, attention distance); ``explain`` runs a model and returns maps;
``figures`` draws the paper's figures; ``render`` makes overlays and PNGs; ``report`` writes the
``vitlab inspect`` page.
"""

from __future__ import annotations

from .explain import METHODS, AttentionMaps, attention_distances, attention_maps, shown_query
from .figures import filter_components, patch_filters, position_similarity
from .maps import (
    Rollout,
    attention_rollout,
    grid_mean_distance,
    mean_attention_distance,
    neighbour_similarity_gap,
    residual_attention,
    token_map,
)
from .report import Inspection, inspect_model

__all__ = [
    "METHODS",
    "AttentionMaps",
    "Inspection",
    "Rollout",
    "attention_distances",
    "attention_maps",
    "attention_rollout",
    "filter_components",
    "grid_mean_distance",
    "inspect_model",
    "mean_attention_distance",
    "neighbour_similarity_gap",
    "patch_filters",
    "position_similarity",
    "residual_attention",
    "shown_query",
    "token_map",
]
