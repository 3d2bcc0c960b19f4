"""Divide and conquer: cluster the samples, train a sub-model per cluster (or per map region), combine them into
one :class:`~tomoformer.models.experts.ExpertsModel` (registered as ``experts``) and fine-tune it end to end.

Modules: ``clustering`` (scikit-learn fit), ``config``, ``build`` (experts loaded from their training runs),
``task`` and ``fit`` (the pipeline behind ``tomoformer experts fit``). The nn.Modules (combined model, router,
clustering features, shared-LoRA backbone) are in :mod:`tomoformer.models.experts`.
"""
