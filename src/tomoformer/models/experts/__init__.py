"""The experts nn.Modules: :class:`ExpertsModel` (registered as ``experts``: sub-models per cluster or region and
their combination), the :class:`Router`, the clustering :class:`FeatureExtractor` and the shared-LoRA backbone.

Clustering with scikit-learn, building the model from trained expert checkpoints and the training pipeline live
in :mod:`tomoformer.experts`.
"""

from tomoformer.models.experts.features import FeatureExtractor
from tomoformer.models.experts.model import COMBINES, ExpertsModel
from tomoformer.models.experts.router import METHODS, Router
from tomoformer.models.experts.shared import SharedLoRABackbone

__all__ = ["COMBINES", "METHODS", "ExpertsModel", "FeatureExtractor", "Router", "SharedLoRABackbone"]
