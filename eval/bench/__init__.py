"""The benchmarks, one module each, each a ``vqa bench NAME`` command (``agent/cli/bench.py``) that prints its
numbers; none asserts a speed (docs/benchmarks.md has the measurements and what each number includes).

- ``mc``: letter scoring vs generation, and the graph's own overhead per question;
- ``visdial``: ranking VisDial candidates with a shared prefix vs one pass each;
- ``tools``: ``detect`` (with and without tiling) and ``som`` per image;
- ``kb``: the knowledge base's index types (build time, latency, recall);
- ``server``: the ``openai`` backend's client throughput against the local test double of a server;
- ``train``: ``vqa train``'s step time and peak memory, or the memory of the real checkpoints (``--estimate``);
- ``overhead``: the graph's overhead alone, wall and CPU time, to compare two checkouts.

The router's accuracy is ``eval/router.py`` (``vqa dev eval-router``).
"""
