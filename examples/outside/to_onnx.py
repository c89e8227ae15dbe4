"""Export the example CNN to a plain ONNX graph (images -> logits), as any framework's exporter would.

``python examples/outside/to_onnx.py examples/outside/fashion_cnn.pt fashion_cnn.onnx``; the bench then measures it
from its outputs alone: ``python -m robustness.bench --onnx fashion_cnn.onnx --dataset fashion-mnist``.
"""

import sys

import torch
from fashion_cnn import make_model

if __name__ == "__main__":
    weights, out = sys.argv[1], sys.argv[2]
    model = make_model()
    model.load_state_dict(torch.load(weights, weights_only=True))
    torch.onnx.export(
        model.eval(),
        torch.rand(1, 1, 28, 28),
        out,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    print(f"wrote {out}")
