"""Models: TAM, the temporal ResNet, the recognizer and its card, the registry, checkpoint files.

Never imports ``tanet.data``, ``tanet.engine``, ``tanet.config`` or the apps.
"""
from tanet.models.factory import create_model, load_model
from tanet.models.recognizer import IMAGENET_MEAN, IMAGENET_STD, ModelCard, Recognizer
from tanet.models.registry import default_card, list_models, model_defaults, register_model
from tanet.models.resnet import ResNet, temporal_shift
from tanet.models.tam import TAM

__all__ = ["TAM", "ResNet", "Recognizer", "ModelCard", "create_model", "load_model",
           "list_models", "model_defaults", "default_card", "register_model", "temporal_shift",
           "IMAGENET_MEAN", "IMAGENET_STD"]
