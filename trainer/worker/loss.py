"""The training loss without the logits: cross-entropy over the target tokens only, a few rows at a time.

Why: a (batch × length × vocabulary) logit tensor is the largest thing a small model's training step
makes — 8 × 512 × 49,152 floats is 0.8 GB for the 135M default, before softmax, its gradient and the
copies a loss makes — and most of its rows are prompt tokens whose loss is ignored anyway. Here the
backbone's hidden states are gathered at the target positions only, and each chunk of rows goes
through the output layer, log-softmax and its gradient at once; the chunk's logits are gone before the
next starts. Peak extra memory: one chunk (`chunk_rows` × vocabulary floats, ~64 MB), whatever the batch.
The gradient with respect to the hidden states is computed in the forward pass (it is cheap: the
chunk's softmax is at hand) and scaled in the backward, so nothing is recomputed.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100
CHUNK_BYTES = 64 * 2**20  # logits of one chunk (fp32)


def chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_BYTES // (4 * vocab))


class _TargetCrossEntropy(torch.autograd.Function):
    """sum over rows of -log softmax(hidden @ weight.T / … )[target], with grads for hidden (and weight
    when it trains). Returns (loss_sum, n_correct); only loss_sum is differentiable."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                softcap: float | None, want_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = hidden.shape[0], weight.shape[0]
        rows = chunk_rows(vocab)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        need_h = want_grad and ctx.needs_input_grad[0]
        need_w = want_grad and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for a in range(0, n, rows):
            h, t = hidden[a:a + rows], targets[a:a + rows]
            z = (h @ weight.t()).float()
            tanh = None
            if softcap:
                tanh = z.div_(softcap).tanh_()
                z = tanh * softcap
            correct += (z.argmax(-1) == t).sum()
            lse = torch.logsumexp(z, dim=-1)
            loss += (lse - z.gather(1, t[:, None]).squeeze(1)).sum()
            if need_h or need_w:
                # d loss / d z = softmax(z) - onehot(target), built in place over z
                g = z.sub_(lse[:, None]).exp_()
                g[torch.arange(len(t), device=g.device), t] -= 1.0
                if tanh is not None:  # through the cap: d(c·tanh(x/c))/dx = 1 - tanh²
                    g.mul_(1.0 - tanh * tanh)
                g = g.to(hidden.dtype)
                if need_h:
                    grad_h[a:a + rows] = g @ weight
                if need_w:
                    grad_w += (g.t() @ h).float()
            del z, tanh
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.has, ctx.w_dtype = (need_h, need_w), weight.dtype
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: Any) -> tuple:
        need_h, need_w = ctx.has
        saved = list(ctx.saved_tensors)
        grad_h = grad_w = None
        if need_h:
            grad_h = saved.pop(0)
            grad_h = grad_h * grad_loss.to(grad_h.dtype)
        if need_w:
            grad_w = (saved.pop(0) * grad_loss).to(ctx.w_dtype)
        return grad_h, grad_w, None, None, None


def target_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: Any = None,
                num_items: Any = None, **backbone_kwargs: Any) -> tuple[torch.Tensor, int, int]:
    """(mean loss over target tokens, target tokens, correct top-1 predictions) of a causal LM batch.

    `model` is a transformers causal LM or a PeftModel over one. `labels` are aligned with `input_ids`
    (IGNORE where no loss): the logits at position i predict labels[i + 1]. `num_items`: the divisor when
    gradient accumulation spreads one optimizer step over several micro-batches (trl/transformers pass
    the step's total target count), else this batch's target count.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = causal_lm.get_decoder()
    head = causal_lm.get_output_embeddings()
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **backbone_kwargs)
    hidden = out.last_hidden_state[:, :-1]
    shifted = labels[:, 1:]
    mask = shifted != IGNORE
    picked, targets = hidden[mask], shifted[mask]
    n = int(targets.numel())
    softcap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)
    loss_sum, correct = _TargetCrossEntropy.apply(picked, head.weight, targets, softcap, torch.is_grad_enabled())
    if head.bias is not None:
        raise ValueError("target_loss: an output layer with a bias is not supported")
    divisor = num_items if num_items is not None else max(1, n)
    if isinstance(divisor, torch.Tensor):
        divisor = divisor.to(loss_sum.device).clamp(min=1)
    if n == 0:  # keep the graph connected: a batch with no target still backpropagates a zero
        loss_sum = loss_sum + hidden.sum() * 0.0
    return loss_sum / divisor, n, int(correct)
