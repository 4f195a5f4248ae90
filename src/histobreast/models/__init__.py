"""Models: layers, System A (GoogLeNet-BN + SEP, hybrid), System B (MSMV-PFENet), baselines."""

from histobreast.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
