"""forward_batches: batching does not change the results; numpy uint8 and float tensors; logits-only models."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.inference import forward_batches, to_tensor


class _Net(nn.Module):
    def __init__(self, with_z: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.with_z = nn.Linear(12, 3), with_z

    def forward(self, x):
        z = x.flatten(1)
        return (self.lin(z), z) if self.with_z else self.lin(z)


def test_batches_numpy_and_tensor_inputs_agree():
    images = np.random.default_rng(0).integers(0, 256, (37, 3, 2, 2), dtype=np.uint8)
    net = _Net()
    logits, z = forward_batches(net, images, batch_size=8)
    full_logits, full_z = forward_batches(net, images, batch_size=1000)
    np.testing.assert_allclose(logits, full_logits, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(z, images.reshape(37, -1).astype(np.float32) / 255)
    t_logits, _ = forward_batches(net, to_tensor(images), batch_size=5)
    np.testing.assert_allclose(t_logits, logits, rtol=1e-6, atol=1e-7)
    assert logits.dtype == np.float32 and logits.shape == (37, 3)


def test_logits_only_model_and_empty_input():
    images = np.zeros((4, 3, 2, 2), np.uint8)
    logits, z = forward_batches(_Net(with_z=False), images)
    np.testing.assert_array_equal(logits, z)
    empty_logits, _ = forward_batches(_Net(), images[:0])
    assert len(empty_logits) == 0
