"""Networks of the paper (GANs, conv autoencoder, LSTMs) and a causal Transformer reference, their losses, and the registry that names them.

Imports torch and numpy (and ``storage_schemas``) only; nothing here knows about training loops or Prefect.
"""

from .autoencoder import AutoencoderConfig, ConvAutoencoder
from .gan import LOSSES, GanConfig, build_gan, gradient_penalty
from .losses import class_cross_entropy, mse_loss, paper_custom_loss
from .lstm import LstmConfig, NextColumnLSTM, Seq2SeqLSTM, build_lstm, classes_to_roll, roll_to_classes
from .transformer import NextColumnTransformer, TransformerConfig
from .registry import MODEL_NAMES, REGISTRY, ModelSpec, count_parameters, describe_all, get_spec

__all__ = [
    "AutoencoderConfig",
    "ConvAutoencoder",
    "GanConfig",
    "build_gan",
    "gradient_penalty",
    "LOSSES",
    "LstmConfig",
    "NextColumnLSTM",
    "Seq2SeqLSTM",
    "build_lstm",
    "TransformerConfig",
    "NextColumnTransformer",
    "roll_to_classes",
    "classes_to_roll",
    "paper_custom_loss",
    "mse_loss",
    "class_cross_entropy",
    "ModelSpec",
    "REGISTRY",
    "MODEL_NAMES",
    "get_spec",
    "count_parameters",
    "describe_all",
]
