"""HuggingFace-style geo transformer: configuration, modeling and Auto registration.

Importing this package registers the model with ``AutoConfig``, ``AutoModel``,
``AutoModelForSequenceClassification`` and ``AutoModelForTokenClassification``, and marks the classes
for ``register_for_auto_class`` so that a saved folder also loads with ``trust_remote_code=True``.
HF has no Auto class for sequence regression or equivariant outputs: load
`GeoTransformerForSequenceRegression` and `GeoTransformerForEquivariantRegression` by name, or their
folders with ``AutoModel`` and ``trust_remote_code=True`` (the folder's ``auto_map`` names the head there).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_geo_transformer import GeoTransformerConfig
from .equivariant_heads import (
    EquivariantRegressionOutput,
    GeoTransformerForEquivariantRegression,
    harmonic_to_traceless,
    traceless_to_harmonic,
)
from .modeling_geo_transformer import (
    GeoTransformerForSequenceClassification,
    GeoTransformerForSequenceRegression,
    GeoTransformerForTokenClassification,
    GeoTransformerModel,
    GeoTransformerOutput,
    GeoTransformerPreTrainedModel,
    SequenceRegressionOutput,
)

__all__ = [
    "EquivariantRegressionOutput",
    "GeoTransformerConfig",
    "GeoTransformerForEquivariantRegression",
    "GeoTransformerForSequenceClassification",
    "GeoTransformerForSequenceRegression",
    "GeoTransformerForTokenClassification",
    "GeoTransformerModel",
    "GeoTransformerOutput",
    "GeoTransformerPreTrainedModel",
    "SequenceRegressionOutput",
    "harmonic_to_traceless",
    "traceless_to_harmonic",
]

AutoConfig.register(GeoTransformerConfig.model_type, GeoTransformerConfig, exist_ok=True)
AutoModel.register(GeoTransformerConfig, GeoTransformerModel, exist_ok=True)
AutoModelForSequenceClassification.register(
    GeoTransformerConfig, GeoTransformerForSequenceClassification, exist_ok=True
)
AutoModelForTokenClassification.register(
    GeoTransformerConfig, GeoTransformerForTokenClassification, exist_ok=True
)

GeoTransformerConfig.register_for_auto_class()
GeoTransformerModel.register_for_auto_class("AutoModel")
GeoTransformerForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
GeoTransformerForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
GeoTransformerForSequenceRegression.register_for_auto_class("AutoModel")
GeoTransformerForEquivariantRegression.register_for_auto_class("AutoModel")
