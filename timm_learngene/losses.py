"""Loss functions shared by distillation, finetuning and the plain-ViT recipe (written once here)."""
from typing import Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ['kd_loss', 'soft_cross_entropy', 'label_kd_loss']


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean. Logits are ``B x classes``."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction='batchmean', log_target=True) * (t * t)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for class indices (``B``, with label smoothing) or soft targets (``B x classes``: mixup,
    smoothing already in)."""
    if target.ndim == logits.ndim:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=smoothing)


def label_kd_loss(logits: torch.Tensor, target: torch.Tensor, teacher_logits: Optional[torch.Tensor] = None,
                  ce_weight: float = 1.0, kd_weight: float = 0.0, temperature: float = 1.0,
                  smoothing: float = 0.0) -> Dict[str, torch.Tensor]:
    """``ce_weight * CE(logits, target) + kd_weight * KD(logits, teacher_logits)`` as ``{'ce', 'kd', 'total'}``
    (no ``kd`` without teacher logits). The loss of finetuning and of a plain ViT trained with logit KD."""
    ce = soft_cross_entropy(logits, target, smoothing)
    out = {'ce': ce}
    total = ce_weight * ce
    if teacher_logits is not None:
        out['kd'] = kd_loss(logits, teacher_logits.float(), temperature)
        total = total + kd_weight * out['kd']
    out['total'] = total
    return out
