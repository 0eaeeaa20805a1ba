"""Models: TAM, the temporal ResNet, the recognizer and its registry (never imports data/engine)."""
from tanet.models.recognizer import ModelCard, Recognizer
from tanet.models.registry import create_model, list_models, model_defaults, register_model
from tanet.models.resnet import ResNet, temporal_shift
from tanet.models.tam import TAM

__all__ = ["TAM", "ResNet", "Recognizer", "ModelCard", "create_model", "list_models",
           "model_defaults", "register_model", "temporal_shift"]
