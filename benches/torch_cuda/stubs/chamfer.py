# The official Point-MAE module imports the chamfer extension at import time; the classifier
# benchmarks never call it.
def forward(*_):
    raise NotImplementedError("chamfer stand-in: not needed for classification benchmarks")


backward = forward
