"""The web UI (``vqa ui``, Gradio): ``app`` builds the Blocks (the Ask tab), ``chat_tab`` and ``runs_tab`` the
other tabs, ``views`` and ``runs`` turn records and run folders into what they show, and ``engine`` answers
(the ``Orchestrator`` stand-in). Needs the ``ui`` extra (``pip install -e '.[ui]'``)."""
