"""The paper's losses (Eq. 1-6) as pure functions of tensors; each returns a scalar tensor.

Features are L2-normalised inside every function, so callers may pass raw encoder outputs.
Shapes: B = batch, C = classes, d = embedding width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_modal_supcon(
    z_a: torch.Tensor, z_b: torch.Tensor, labels: torch.Tensor, temperature: float = 0.25
) -> torch.Tensor:
    """Eq. 1: supervised contrastive loss with anchors from set alpha and a cross-modal contrast set.

    z_a, z_b: [n, d], row i of both belongs to sample i; labels: [n] (activity ids).
    Anchors are the n rows of z_a; the contrast set is the 2n rows of cat(z_a, z_b). For
    anchor i the positives are every other contrast row with labels[i] (labels repeat for the
    z_b half); the denominator sums over every contrast row except i itself.
    """
    n = z_a.shape[0]
    z_a, z_b = F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)
    contrast = torch.cat([z_a, z_b], dim=0)  # (2n, d)
    logits = (z_a @ contrast.T).float() / temperature  # (n, 2n)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[:, :n] = torch.eye(n, dtype=torch.bool, device=logits.device)
    contrast_labels = torch.cat([labels, labels])  # (2n,)
    positives = (labels[:, None] == contrast_labels[None, :]) & ~self_mask  # (n, 2n)
    log_denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)
    log_prob = logits - log_denominator[:, None]
    # Every anchor has at least one positive: its own row in z_b.
    per_anchor = -(log_prob * positives).sum(1) / positives.sum(1)
    return per_anchor.mean()


def pretrain_loss(
    z_img: torch.Tensor,
    z_img_aug: torch.Tensor,
    z_act: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.25,
    weight_ii: float = 1.0,
    weight_ia: float = 1.0,
) -> torch.Tensor:
    """Eq. 2: L_pre = L_II (image vs augmented image) + L_IA (image vs activity text).

    The weights are 1 in the paper; a weight of 0 switches a term off (ablation PA: L_IA = 0).
    """
    total = z_img.new_zeros((), dtype=torch.float32)
    if weight_ii > 0:
        total = total + weight_ii * cross_modal_supcon(z_img, z_img_aug, labels, temperature)
    if weight_ia > 0:
        total = total + weight_ia * cross_modal_supcon(z_img, z_act, labels, temperature)
    return total


def _scaled_cosine(
    z_x: torch.Tensor, z_y: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    return logit_scale * (F.normalize(z_x, dim=-1) @ F.normalize(z_y, dim=-1).T).float()


def name_description_loss(
    z_desc: torch.Tensor, z_name: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Eq. 3: mean over classes i of CE(logit_scale * z_desc @ z_name.T row i, target i). [C, d] each."""
    logits = _scaled_cosine(z_desc, z_name, logit_scale)  # (C, C)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def expression_loss(
    z_img: torch.Tensor,
    z_name: torch.Tensor,
    targets: torch.Tensor,
    logit_scale: torch.Tensor | float,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 4: -1/B sum_i w_{y_i} log softmax(s_i)[y_i], s = logit_scale * z_img @ z_name.T.

    Divided by the batch size B, not by the sum of the weights (unlike torch's weighted mean).
    """
    return expression_loss_from_logits(
        _scaled_cosine(z_img, z_name, logit_scale), targets, class_weights
    )


def expression_loss_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 4 on given logits [B, C] (the linear-head ablation uses it too)."""
    nll = F.cross_entropy(logits.float(), targets, reduction="none")  # (B,)
    if class_weights is not None:
        nll = nll * class_weights.to(nll)[targets]
    return nll.sum() / targets.shape[0]


def au_loss(
    z_img: torch.Tensor,
    z_name: torch.Tensor,
    targets: torch.Tensor,
    logit_scale: torch.Tensor | float,
    pos_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 5: -1/B sum_i sum_c [w_c y log sig(s) + (1 - y) log(1 - sig(s))], unknown (-1) masked."""
    return au_loss_from_logits(_scaled_cosine(z_img, z_name, logit_scale), targets, pos_weights)


def au_loss_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, pos_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 5 on given logits [B, C]; targets [B, C] in {1, 0, -1}."""
    logits = logits.float()
    known = (targets >= 0).to(logits)
    y = targets.clamp(min=0).to(logits)
    w = pos_weights.to(logits)[None, :] if pos_weights is not None else 1.0
    # log sigmoid(s) and log(1 - sigmoid(s)) = log sigmoid(-s), both numerically stable.
    per_label = -(w * y * F.logsigmoid(logits) + (1 - y) * F.logsigmoid(-logits))
    return (per_label * known).sum() / targets.shape[0]


def finetune_loss(l_in: torch.Tensor, l_dn: torch.Tensor | float, lam: float = 2.0) -> torch.Tensor:
    """Eq. 6: L_fine = (lambda * L_IN + L_DN) / 2."""
    return (lam * l_in + l_dn) / 2
