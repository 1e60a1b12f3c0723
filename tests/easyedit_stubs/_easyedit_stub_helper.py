"""TEST STUB helper: objects that import fine and fail loudly when used."""


def unavailable(qualname: str):
    """A callable standing in for ``qualname`` that raises when called."""

    def _raise(*args, **kwargs):
        raise RuntimeError(
            f"{qualname} is a test stub (tests/easyedit_stubs): the real package is not installed "
            "because it has no CPU build here; EasyEdit's multimodal code paths are unavailable"
        )

    _raise.__name__ = qualname.rsplit(".", 1)[-1]
    _raise.__qualname__ = qualname
    return _raise


def module_getattr(module_name: str):
    """A module-level ``__getattr__`` that hands out :func:`unavailable` stand-ins."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return unavailable(f"{module_name}.{name}")

    return __getattr__
