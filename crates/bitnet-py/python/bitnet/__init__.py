"""bitnet-rs from Python: native 1.58-bit (ternary) language models on CPUs.

>>> import bitnet
>>> m = bitnet.Model("ggml-model-i2_s.gguf", threads=4)
>>> m.generate("The capital of France is", max_tokens=16, temperature=0)
"""

from ._native import Model, TokenStream, __version__

__all__ = ["Model", "TokenStream", "__version__"]
