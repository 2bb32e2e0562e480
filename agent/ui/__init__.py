"""The web UI (``vqa ui``, Gradio): ``app`` builds the Blocks (the Ask tab), ``chat_tab`` and ``runs_tab`` the
other tabs, and ``views`` and ``runs`` turn records and run folders into what they show; an
``agent.api.Orchestrator`` answers. Needs the ``ui`` extra (``pip install -e '.[ui]'``)."""
