"""Divide and conquer: cluster the samples, train a sub-model per cluster (or per map region), combine them into
one :class:`~tomoformer.experts.model.ExpertsModel` (registered as ``experts``) and fine-tune it end to end.

Modules: ``features`` (what samples are clustered on), ``clustering`` (scikit-learn fit, torch router),
``model`` (the combined model), ``fit`` (the pipeline behind ``tomoformer experts fit``).
"""
