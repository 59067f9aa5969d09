"""The official DAPT / Point-MAE models on a CUDA GPU, for side-by-side runs with `dapt bench
--backend wgpu` on the same card (benches/gpu.sh). One process, one JSON line per case.

Usage: PYTHONPATH=<official DAPT tree> python bench.py [STEPS] [CASE ...]
CASE is MODE:PRESET:BATCH (MODE dapt | full | infer, PRESET modelnet40 | objbg); default: the
twelve cases of benches/gpu.sh. The official code's CUDA extensions (pointnet2_ops, knn_cuda)
are used when installed; otherwise the stand-ins in stubs/ (a CuPy FPS kernel with the official
semantics, a float32 KNN), and each line says which. PyTorch's defaults stay as the official
training uses them: fp32, matmul without TF32 (convolutions may use TF32, cuDNN's default).
Times are the median of STEPS steps between CUDA syncs; grouping runs inside the step, as
upstream. Peak memory is torch's max_memory_allocated (and reserved) over the case.
"""
import json
import os
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
try:
    import knn_cuda  # noqa: F401
    import pointnet2_ops  # noqa: F401
    kernels = "official"
except ImportError:
    sys.path.insert(0, os.path.join(here, "stubs"))
    kernels = "stand-in"
try:
    import termcolor  # noqa: F401  (imported by the official utils/checkpoint.py)
except ImportError:
    sys.modules["termcolor"] = types.SimpleNamespace(colored=lambda s, *a, **k: s)

try:
    import easydict  # noqa: F401  (imported by the official utils/config.py)
except ImportError:
    class _EasyDict(dict):
        __getattr__ = dict.get
    sys.modules["easydict"] = types.SimpleNamespace(EasyDict=_EasyDict)

import models.DAPT as D  # noqa: E402
import models.Point_MAE as P  # noqa: E402


class Cfg(dict):
    __getattr__ = dict.get


def build(mode, preset):
    n, g, k = (1024, 64, 40) if preset == "modelnet40" else (2048, 128, 15)
    if mode in ("dapt", "infer"):
        cfg = Cfg(NAME="PointTransformer_DAPT", trans_dim=384, depth=12, drop_path_rate=0.1,
                  drop_rate=0.0, cls_dim=k, num_heads=6, group_size=32, num_group=g,
                  encoder_dims=384, drop_adapter_rate=0.0, rank=72 if n == 1024 else 64,
                  class_token="use", prompt_token="None" if n == 1024 else "mean",
                  patch_token="max")
        model = D.PointTransformer_DAPT(cfg)
        for name, p in model.named_parameters():
            p.requires_grad = any(s in name for s in ("cls", "tfts", "Adapter"))
    else:
        cfg = Cfg(NAME="PointTransformer", trans_dim=384, depth=12, drop_path_rate=0.1,
                  cls_dim=k, num_heads=6, group_size=32, num_group=g, encoder_dims=384)
        model = P.PointTransformer(cfg)
    return model.cuda(), n, k


def case(mode, preset, b, steps, warmup=2):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, n, k = build(mode, preset)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    pts = (torch.randn(b, n, 3, generator=gen) * 0.5).cuda()
    label = torch.randint(0, k, (b,), generator=gen).cuda()
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if mode == "infer":
            model.eval()
            with torch.no_grad():
                model(pts)
        else:
            model.train()
            loss = F.cross_entropy(model(pts), label)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10)
            opt.step()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    stub = sys.modules.get("pointnet2_ops.pointnet2_utils")
    out = {"impl": "pytorch", "preset": preset, "mode": mode, "batch": b, "points": n,
           "ms_per_step": round(ms, 2), "samples_per_s": round(b / ms * 1000, 1),
           "device_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
           "reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1),
           "trainable": sum(p.numel() for p in params), "kernels": kernels,
           "fps": getattr(stub, "BACKEND", None) or kernels,
           "fps_agrees_with_torch_loop": getattr(stub, "AGREES", None),
           "torch": torch.__version__, "device": torch.cuda.get_device_name()}
    del model, opt
    return out


def main():
    args = sys.argv[1:]
    steps = int(args.pop(0)) if args and args[0].isdigit() else 10
    cases = [a.split(":") for a in args] or [
        (m, p, str(b)) for p in ("modelnet40", "objbg") for b in (32, 128)
        for m in ("dapt", "full", "infer")]
    for mode, preset, b in cases:
        try:
            print(json.dumps(case(mode, preset, int(b), steps)), flush=True)
        except Exception as e:  # one failing case must not lose the others
            print(json.dumps({"impl": "pytorch", "preset": preset, "mode": mode,
                              "batch": int(b), "error": repr(e)[:300]}), flush=True)


if __name__ == "__main__":
    main()
