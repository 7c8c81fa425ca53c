"""The chat-template worker process: ``python -m bitnet._template_worker BYTES``.

``bitnet.Model`` starts one to render the model's chat template with its address space capped at BYTES, so a
hostile template (one that doubles a string in a loop) fails its own call instead of exhausting the memory
of the program that loaded the model. It reads render requests on stdin until stdin closes.
"""

import sys

from ._native import _serve_template_worker

if __name__ == "__main__":
    _serve_template_worker(int(sys.argv[1]))
