"""A plain PyTorch classifier trained on Fashion-MNIST, written without any of this project's code.

``python examples/outside/fashion_cnn.py IDX_DIR OUT.pt [EPOCHS]`` trains it and saves its state dict; the bench
(``--model examples.outside.fashion_cnn:make_model --weights OUT.pt``) and the export load it back.
"""

import gzip
import sys

import numpy as np
import torch
from torch import nn


def make_model() -> nn.Module:
    """[0, 1] images (N, 1, 28, 28) -> 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 5 * 5, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def read_idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


if __name__ == "__main__":
    root, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3
    x = torch.tensor(
        read_idx(f"{root}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28) / 255.0
    ).float()
    y = torch.tensor(read_idx(f"{root}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {nn.functional.cross_entropy(model(x[:2000]), y[:2000]).item():.3f}")
    torch.save(model.state_dict(), out)
