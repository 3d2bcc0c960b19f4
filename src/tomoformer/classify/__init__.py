"""Image classification with timm models under the fine-tuning policies of :mod:`tomoformer.tasks.policy`.

``data`` reads ImageFolder trees and ``.npz`` arrays, ``models`` builds timm models at the data's image size and
fits pretrained weights onto them, ``task`` is the LightningModule, ``run`` a training run, ``evaluate`` scores
a checkpoint, ``synthetic`` draws a pretraining set and ``demo`` runs the offline pretrain → fine-tune study.
"""
