"""The models, one module per architecture, named in one registry (registry.py): `lab_cnn`
(the lab's Problem 3 network), `preact_resnet18` (Wong et al. 2020), `wide_resnet` (WRN-d-k,
Zagoruyko & Komodakis 2016) and `fast_cnn` (airbench-class, optional whitening first layer).

Output contract, every model: `forward` returns logits (train with cross-entropy on logits,
never on softmax output); `predict_proba` returns the class probabilities (softmax of logits).
Normalization is the first layer, so callers pass pixels in [0, 1]. table.py counts the
parameters by the lab's Table 1.3; files.py saves and loads a model with its config.
"""

from advlab.models.core import Classifier, ModelConfig, Normalize
from advlab.models.files import load_model, save_model
from advlab.models.lab_cnn import LabCNN
from advlab.models.registry import ARCHITECTURES, build_model, model_config, new_model
from advlab.models.table import format_parameter_table, parameter_table

__all__ = [
    "ARCHITECTURES", "Classifier", "LabCNN", "ModelConfig", "Normalize", "build_model",
    "format_parameter_table", "load_model", "model_config", "new_model", "parameter_table",
    "save_model",
]
