"""The shared vocabulary: the types, errors and file, image and text helpers every layer speaks.

Tools, plug-ins, the orchestrator (the rest of ``agent``), training and the front ends (``agent.cli``,
``agent.ui``, ``agent.api``) import from here; ``agent.core`` imports nothing from the project outside itself
(``tests/test_layers.py`` checks it). Plug-ins import from these modules:

- ``schema``: ``Question``, ``ToolResult``, ``Answer``, ``Decision`` ...; ``evidence``: ``Evidence`` and its
  built-in subclasses; ``support``: how built-in evidence scores the options; ``probs``: letter probabilities;
- ``errors``: the one-line error types; ``images``: the one safe image reader; ``fileio``: atomic and synced
  writes; ``paths``: file names from untrusted ids; ``hub``: local paths or hub ids; ``e5``: text embeddings;
- ``adapter``: the LoRA adapter manifest both ``vqa train`` and inference read;
- ``text``, ``phrases``: Korean/English text helpers; ``textsafe``, ``redact``: what reaches a terminal or a file.

Their old spellings (``agent.schema``, ``tools.text`` ...) still import, with a ``DeprecationWarning`` naming the
new one (``agent.moved``).
"""
