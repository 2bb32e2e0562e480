"""The router's learned stage (``agent/router.py`` is the router): the labelled question bank (``bank``), features
of a question's options (``features``), the trained classifier as plain arrays (``model``) and its training with
scikit-learn (``train``). Data files live in ``data/``."""
