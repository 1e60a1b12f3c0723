"""Representation drift (paper §4.2, Fig 10): how far an edited model's hidden states of factual
prompts it was never edited on move away from the unedited model's.

:func:`prompt_states` collects one vector per prompt (the hidden state of the prompt's last token
after the final layer norm, i.e. what the LM head reads). Two summaries compare the edited states
Y with the unedited states X (both n × d, row i = prompt i):

* :func:`mean_cosine` — mean over prompts of cos(x_i, y_i): 1 when nothing moved;
* :func:`linear_cka` — linear CKA (Kornblith et al., 2019) of the centred matrices,
  ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F): 1 for identical geometry, invariant to rotations and
  isotropic scaling of the states, so it measures changes of the geometry itself.

:func:`pca_2d` projects both sets onto the unedited states' top two principal axes for the
before/after scatter plot.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .._util import model_device, pad_id
from .scoring import _left_pad, encode_prompts


@torch.inference_mode()
def prompt_states(model, tok, prompts: list[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Final-layer hidden state of each prompt's last token, float32 on the CPU (n × d)."""
    if not prompts:
        raise ValueError("prompt_states needs at least one prompt")
    enc = encode_prompts(tok, prompts)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    device, pad = model_device(model), pad_id(tok)
    out: list[torch.Tensor | None] = [None] * len(enc)
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="representations", disable=not progress, leave=False):
        ids, mask, pos = _left_pad([enc[i] for i in batch], pad, device)
        hidden = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                       output_hidden_states=True).hidden_states[-1][:, -1]
        for row, i in enumerate(batch):
            out[i] = hidden[row].detach().to("cpu", torch.float32)
    return torch.stack(out)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"representation sets must be two n×d matrices of one shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError("representation drift needs at least two prompts")
    x, y = x.double(), y.double()
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("representation sets contain NaN or Inf")
    return x, y


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over rows of cos(x_i, y_i) (1 = no drift)."""
    x, y = _check_pair(x, y)
    return float(torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12).mean())


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of the column-centred matrices: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) (1 = same geometry)."""
    x, y = _check_pair(x, y)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if float(den) == 0.0:
        raise ValueError("linear CKA is undefined for a constant representation set")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / den)


def drift_metrics(reference: torch.Tensor, current: torch.Tensor) -> dict:
    """``{"repr_cos": ..., "repr_cka": ...}`` of the current states against the unedited ones."""
    return {"repr_cos": mean_cosine(reference, current), "repr_cka": linear_cka(reference, current)}


def pca_2d(reference: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """``reference`` and ``others`` projected on the reference's top two principal axes (centred
    by the reference mean), so every set is drawn in the unedited model's coordinates."""
    ref = reference.double()
    mean = ref.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(ref - mean, full_matrices=False)
    axes = vh[:2].T
    return [((m.double() - mean) @ axes).float() for m in (reference, *others)]
