# GPU stand-in for KNN_CUDA (transpose_mode=True), used only when the official extension is not
# installed: ref (B, N, 3), query (B, G, 3) -> dist, idx (B, G, k), nearest first.
import torch
import torch.nn as nn


class KNN(nn.Module):
    def __init__(self, k, transpose_mode=True):
        super().__init__()
        assert transpose_mode
        self.k = k

    def forward(self, ref, query):
        d = ((query * query).sum(-1, keepdim=True) - 2 * query @ ref.transpose(1, 2)
             + (ref * ref).sum(-1).unsqueeze(1)).clamp_min(0)
        dist, idx = d.topk(self.k, dim=-1, largest=False, sorted=True)
        return dist.sqrt(), idx
