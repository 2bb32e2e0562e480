"""Visual dialogue answer ranking (VisDial v1.0): free-form candidates ranked with the photo, the caption, the
history and the tools' evidence, scored with the challenge's metrics.

- ``data``: the VisDial JSON and dense annotations, read into ``DialogRound`` s (one per round to rank);
- ``metrics``: scores to ranks (ties broken by option order), R@k, mean rank, MRR and NDCG as
  ``visdialch/metrics.py`` of the challenge starter code defines them, with confidence intervals;
- ``scorers``: how a reasoner scores candidates (evidence coverage, Qwen-VL log-likelihood with a shared prefix,
  a server's prompt log-probabilities), chosen by the reasoner's registered name;
- ``rank``: one round through the graph (router and tools run; their evidence goes into the prompt), and a
  resumable run writing ``ranks.json`` and ``metrics.json``.
"""
