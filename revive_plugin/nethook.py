"""Small helpers to address modules/parameters by name and to capture or edit activations with hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

from ._util import get_parameter  # noqa: F401  (EasyEdit-style callers use nethook.get_parameter)


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called ``name`` (clear ``LookupError`` naming it when absent)."""
    for n, m in model.named_modules():
        if n == name:
            return m
    raise LookupError(f"module {name!r} not found in {type(model).__name__}")


def hidden_of(output):
    """The hidden-state tensor of a block's output (a tensor or a tuple whose first item is one)."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output, hidden: torch.Tensor):
    """``output`` with its hidden state replaced by ``hidden``."""
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    return hidden


class StopForward(Exception):
    """Raised by a hook to end a forward pass early once every wanted activation is captured."""


class Trace(contextlib.AbstractContextManager):
    """Capture the inputs (first positional argument) and/or outputs of named modules.

    ``stop=True`` aborts the forward pass right after the last traced module ran
    (use :meth:`run` to swallow the :class:`StopForward`).
    ``edit_output`` maps (module_name, output) -> new output (may keep the autograd graph).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        names: Iterable[str],
        inputs: bool = False,
        outputs: bool = False,
        stop: bool = False,
        detach: bool = True,
        edit_output: Callable | None = None,
    ):
        self.names = list(dict.fromkeys(names))
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        self._pending = set(self.names)
        self._stop = stop
        for name in self.names:
            module = get_module(model, name)
            self._handles.append(
                module.register_forward_hook(self._make_hook(name, inputs, outputs, detach, edit_output))
            )

    def _make_hook(self, name, want_in, want_out, detach, edit_output):
        def hook(module, args, output):
            if want_in:
                x = args[0]
                self.inputs[name] = x.detach() if detach else x
            if edit_output is not None:
                output = edit_output(name, output)
            if want_out:
                h = hidden_of(output)
                self.outputs[name] = h.detach() if detach else h
            self._pending.discard(name)
            if self._stop and not self._pending:
                raise StopForward()
            return output

        return hook

    def run(self, fn: Callable, *args, **kwargs):
        """Call ``fn``; a :class:`StopForward` from the hooks ends it quietly (returns None)."""
        try:
            return fn(*args, **kwargs)
        except StopForward:
            return None

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __exit__(self, *exc) -> None:
        self.close()
        return None


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on every parameter; restores the flags afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
