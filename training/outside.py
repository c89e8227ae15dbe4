"""Classifiers trained elsewhere: load ``PKG.MODULE:FACTORY`` + a state dict, and read a feature layer with a hook.

A factory is a callable with no arguments returning an ``nn.Module`` that maps ``[0, 1]`` images ``(N, C, H, W)``
to logits ``(N, K)``. :func:`load_outside` builds it, loads the weights (``torch.load(weights_only=True)``: no
pickled code runs), checks on a few random inputs that it returns logits (:class:`OutsideModelError` otherwise, one
line), and wraps it in :class:`FeatureModel`, which returns ``(logits, z)`` like this project's classifiers, so
every attack, detector and export that takes a project model takes it too.

``z`` is the feature layer: the flattened *output* of the module named by ``feature_layer``, or by default the
flattened *input* of the last ``nn.Linear`` in module order (the features the classifier layer sees).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import Tensor, nn

MAX_WEIGHTS_BYTES = 2 * 1024**3  # a state dict larger than this is refused before it is read


class OutsideModelError(ValueError):
    """The factory, the weights or the feature layer cannot be used (message: one line)."""


def load_factory(spec: str):
    """The callable named by ``PKG.MODULE:FACTORY`` (``OutsideModelError`` if it cannot be imported)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise OutsideModelError(f"--model {spec!r}: expected PKG.MODULE:FACTORY")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any import-time failure of user code is the user's error
        raise OutsideModelError(
            f"--model {spec}: cannot import {module_name}: {type(err).__name__}: {err}"
        ) from err
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise OutsideModelError(f"--model {spec}: {module_name} has no callable {attr}")
    return factory


def last_linear(net: nn.Module) -> str:
    """Name of the last ``nn.Linear`` in module order."""
    names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise OutsideModelError(
            "the model has no nn.Linear layer: name the feature layer with --feature-layer"
        )
    return names[-1]


class FeatureModel(nn.Module):
    """``x -> (logits, z)``: the wrapped classifier's logits and the hooked feature layer, flattened per row."""

    def __init__(self, net: nn.Module, feature_layer: str | None = None):
        super().__init__()
        self.net = net
        modules = dict(net.named_modules())
        self.feature_layer = feature_layer or last_linear(net)
        self.reads = "output" if feature_layer else "input"
        if self.feature_layer not in modules or self.feature_layer == "":
            known = ", ".join(n for n in modules if n) or "none"
            raise OutsideModelError(
                f"--feature-layer {feature_layer!r}: no such module; the model has: {known}"
            )
        self._z: Tensor | None = None
        modules[self.feature_layer].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output) -> None:
        value = inputs[0] if self.reads == "input" else output
        if not isinstance(value, Tensor):
            raise OutsideModelError(f"feature layer {self.feature_layer!r}: its {self.reads} is not a tensor")
        self._z = value

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._z = None
        logits = self.net(x)
        z, self._z = self._z, None
        if z is None:
            raise OutsideModelError(f"feature layer {self.feature_layer!r} did not run in the forward pass")
        return logits, z.flatten(1)


def check_logits(out, n: int, num_classes: int, spec: str, option: str = "--model") -> None:
    """Refuse anything but float logits of shape ``(n, num_classes)`` that are not already probabilities
    (``option`` names the command-line option that gave the model, for the message)."""
    if not isinstance(out, Tensor):
        raise OutsideModelError(
            f"{option} {spec}: the model returned {type(out).__name__}; expected logits, one "
            f"tensor of shape (N, {num_classes})"
        )
    if out.shape != (n, num_classes) or not out.is_floating_point():
        raise OutsideModelError(
            f"{option} {spec}: the model returned a {out.dtype} tensor of shape "
            f"{tuple(out.shape)} for {n} inputs; expected float logits of shape ({n}, {num_classes})"
        )
    if not torch.isfinite(out).all():
        raise OutsideModelError(f"{option} {spec}: the model returned non-finite outputs; expected logits")
    if (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(n), atol=1e-4):
        raise OutsideModelError(
            f"{option} {spec}: the model returned probabilities (rows >= 0 summing to 1); "
            "expected logits: remove the final softmax"
        )
    if (out <= 0).all() and torch.allclose(out.exp().sum(1), torch.ones(n), atol=1e-4):
        raise OutsideModelError(
            f"{option} {spec}: the model returned log-probabilities (log_softmax); expected "
            "logits: remove the final log_softmax (the attacks' losses need raw logits)"
        )


def load_outside(
    spec: str,
    weights: str | Path,
    input_shape: tuple[int, int, int],
    num_classes: int,
    feature_layer: str | None = None,
    device: str = "cpu",
) -> FeatureModel:
    """Build ``spec``, load ``weights`` and check it returns logits; returns the :class:`FeatureModel` (eval mode)."""
    path = Path(weights)
    if not path.is_file():
        raise OutsideModelError(f"--weights {weights}: no such file")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise OutsideModelError(
            f"--weights {weights}: {path.stat().st_size} bytes, more than the {MAX_WEIGHTS_BYTES} accepted"
        )
    try:
        net = load_factory(spec)()
    except OutsideModelError:
        raise
    except Exception as err:
        raise OutsideModelError(f"--model {spec}: the factory failed: {type(err).__name__}: {err}") from err
    if not isinstance(net, nn.Module):
        raise OutsideModelError(
            f"--model {spec}: the factory returned {type(net).__name__}; expected an nn.Module"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise OutsideModelError(
            f"--weights {weights}: not a readable state dict: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise OutsideModelError(f"--weights {weights}: expected a state dict, got {type(state).__name__}")
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise OutsideModelError(
            f"--weights {weights} do not fit --model {spec}: {' '.join(str(err).split())[:300]}"
        ) from err
    model = FeatureModel(net, feature_layer).to(device).eval()
    x = torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            out = model.net(x)
    except Exception as err:
        raise OutsideModelError(
            f"--model {spec}: the forward pass on a ({', '.join(map(str, x.shape))}) batch in "
            f"[0, 1] failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    check_logits(out.cpu() if isinstance(out, Tensor) else out, len(x), num_classes, spec)
    with torch.no_grad():
        model(x)  # the hook fires
    return model
