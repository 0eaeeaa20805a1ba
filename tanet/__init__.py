"""tanet: video recognition with the Temporal Adaptive Module (TAM) and TANet."""
from tanet.models import TAM, ModelCard, Recognizer, create_model, list_models, model_defaults

__version__ = "0.1.0"
__all__ = ["TAM", "Recognizer", "ModelCard", "create_model", "list_models", "model_defaults",
           "__version__"]
