"""PEFT methods, one file each, found here: every public module of this package is imported and each
concrete :class:`PeftMethod` it defines is registered once, in ``METHODS``.

Everything that enumerates methods derives from ``METHODS``: this package's names and ``__all__``
(``lit_lora.methods.DoraSpec``, as configs name them), the classes jsonargparse offers for
``model.adapter`` (subclasses of ``PeftMethod``, all imported here), and :func:`method_of`, which
describes a saved adapter by the one method that recognises its config.
"""

import importlib
import inspect
import pkgutil

from lit_lora.methods.base import ADAPTER, AdapterHooks, PeftMethod

_NOT_METHODS = {"base"}  # modules of the interface itself; private (_x) modules are helpers


def _discover() -> tuple[type[PeftMethod], ...]:
    """The concrete methods defined in this package's public modules, by module name, then definition."""
    found: list[type[PeftMethod]] = []
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name in _NOT_METHODS:
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        classes = [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module.__name__]
        found += [c for c in classes if issubclass(c, PeftMethod) and not inspect.isabstract(c)]
    _check_unique(found)
    return tuple(found)


def _check_unique(methods: list[type[PeftMethod]]) -> None:
    # results.json and checkpoints key on ``method``: a copied file that kept its name would mix runs up.
    for attribute in ("__name__", "method", "label"):
        seen: dict[str, type[PeftMethod]] = {}
        for method in methods:
            name = getattr(method, attribute)
            if name in seen:
                raise RuntimeError(f"lit_lora.methods: {method} and {seen[name]} share {attribute}={name!r}")
            seen[name] = method


METHODS: tuple[type[PeftMethod], ...] = _discover()
globals().update({method.__name__: method for method in METHODS})
# Imported by discovery, in file-name order: jsonargparse lists model.adapter's classes in that order.
_PLAIN_LORA = next(method for method in METHODS if method.method == "lora")


def method_of(config: object) -> type[PeftMethod]:
    """The registered method whose saved configs look like ``config`` (LoRA when none claims it)."""
    claims = [method for method in METHODS if method.recognises(config)]  # type: ignore[arg-type]
    if len(claims) > 1:  # file order would pick one silently, and results.json would name it
        names = ", ".join(method.__name__ for method in claims)
        kind = getattr(config, "peft_type", type(config).__name__)
        raise RuntimeError(
            f"lit_lora.methods: {names} all recognise this {kind} config; recognises() must not overlap"
        )
    return claims[0] if claims else _PLAIN_LORA


__all__ = ["ADAPTER", "METHODS", "AdapterHooks", "PeftMethod", "method_of"]
__all__ += sorted(method.__name__ for method in METHODS)
