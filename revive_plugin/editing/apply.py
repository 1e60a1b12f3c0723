"""EasyEdit's ``apply_<method>_to_model`` contract on top of :class:`~.editor.Editor`."""

from __future__ import annotations

from copy import deepcopy

from .state import EditState, attach_state, attached_state


def apply_with(editor_cls, model, tok, requests, hparams, copy=False, return_orig_weights=True,
               state: EditState | None = None, **kwargs):
    """Run one round of ``editor_cls`` and return ``(model, weights_copy)`` as EasyEdit expects.

    ``state``: explicit :class:`EditState` to continue; otherwise the state attached to ``model``
    (see :func:`~.state.attached_state`; clear it with :func:`~.state.reset_state`). With ``copy=True``
    the model is deep-copied first and edited with a fresh state (unless ``state`` is given).
    ``weights_copy`` maps each written parameter name to a clone of its value before this call when
    ``return_orig_weights`` is true, else it is empty. Other EasyEdit keyword arguments
    (``keep_original_weight``, ``cache_template``, ``train_ds`` …) are accepted and ignored.
    """
    if copy:
        model = deepcopy(model)
    if isinstance(requests, dict):
        requests = [requests]
    if state is None:
        state = attached_state(model, editor_cls.method)
    else:
        attach_state(model, state)
    editor = editor_cls(model, tok, hparams, state=state, stats_texts=kwargs.get("stats_texts"))
    weights_copy = {}
    if return_orig_weights:
        weights_copy = {n: editor.weight(l).detach().clone() for n, l in zip(editor.edited_params, editor.layers)}
    editor.host_edit(requests)
    return model, weights_copy
