"""tanet: video recognition with the Temporal Adaptive Module (TAM) and TANet."""
from tanet.models import TAM, ModelCard, Recognizer, create_model, list_models, model_defaults

__version__ = "0.1.0"
__all__ = ["TAM", "Recognizer", "ModelCard", "create_model", "list_models", "model_defaults",
           "Predictor", "__version__"]


def __getattr__(name: str):
    """Lazy ``tanet.Predictor`` (it pulls in the video decoder only when used)."""
    if name == "Predictor":
        from tanet.apps.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'tanet' has no attribute {name!r}")
