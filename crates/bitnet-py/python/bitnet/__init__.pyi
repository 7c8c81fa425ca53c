"""Type stubs of bitnet-rs's Python API (the compiled module is bitnet._native)."""

from os import PathLike
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

class TokenStream(Iterator[str]):
    """Text pieces of a generation in progress (each a whole number of UTF-8 characters).

    Each step releases the GIL while the model computes; Ctrl-C between pieces raises
    KeyboardInterrupt.
    """

    def __iter__(self) -> "TokenStream": ...
    def __next__(self) -> str: ...
    @property
    def finish_reason(self) -> Optional[str]:
        """Why the generation ended ("stop" or "length"), or None while it runs."""

class Model:
    """A ternary model loaded by the bitnet-rs engine.

    `path` is a GGUF file (bitnet.cpp's I2_S, llama.cpp's TQ1_0/TQ2_0, ...), a Hugging Face folder,
    or "hf:ORG/REPO[:FILE][@REVISION]" (downloaded into the Hugging Face cache, resumably and
    verified; HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE are honoured); None loads the built-in demo
    model. Weights are memory-mapped, never copied.

    Raises FileNotFoundError / OSError when the file cannot be read, ValueError for a bad argument
    or a malformed model file.
    """

    def __init__(
        self,
        path: Union[str, "PathLike[str]", None] = None,
        threads: Optional[int] = None,
        ctx: Optional[int] = None,
        head_type: str = "file",
        cache_type: str = "f32",
        ffn_act: Optional[str] = None,
        chat_template: Optional[str] = None,
    ) -> None:
        """Loads a model.

        threads: worker threads (process-wide; default: every core). ctx: context size (default: the
        model's, at most 4096). head_type: "file" (lossless) or "q8_0" (faster decode). cache_type:
        "f32" (exact) or "f16". ffn_act: override the FFN activation ("relu2" or "silu").
        chat_template: a template file, or "bitnet" / "llama3" / "chatml".
        """

    @property
    def info(self) -> Dict[str, Any]:
        """Architecture, sizes, context, SIMD level and threads."""

    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        """Token ids of `text` (BOS first when `add_bos` and the model wants one)."""

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of `ids`."""

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        seed: Optional[int] = None,
        stop: Optional[List[str]] = None,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        ignore_eos: bool = False,
        add_bos: bool = True,
    ) -> str:
        """The text generated after `prompt` (llama.cpp's sampler chain; temperature 0 is greedy).

        The GIL is released while computing; Ctrl-C stops generation and raises KeyboardInterrupt.
        """

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        seed: Optional[int] = None,
        stop: Optional[List[str]] = None,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        ignore_eos: bool = False,
        add_bos: bool = True,
    ) -> TokenStream:
        """Like `generate`, as an iterator of text pieces that concatenate to the same text."""

    def chat(
        self,
        messages: List[Dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        seed: Optional[int] = None,
        stop: Optional[List[str]] = None,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        stream: bool = False,
    ) -> Union[str, TokenStream]:
        """The assistant's answer to `messages` ([{"role": ..., "content": ...}, ...]), rendered with
        the model's chat template as `bitnet chat` and the server render it."""

    def logits(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """float32 logits of every position, shape [len(ids), vocab] (no BOS added); the same values
        as `bitnet logits`, bit for bit."""

    def perplexity(self, text: str, ctx: int = 512, batch: int = 512) -> float:
        """Perplexity of `text` by llama-perplexity's method (as `bitnet perplexity -c ctx`)."""

    def embed(self, texts: List[str]) -> npt.NDArray[np.float32]:
        """Normalised embeddings [len(texts), dim] of an embedding model (NotImplementedError for a
        text-generation model)."""
