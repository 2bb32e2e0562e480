"""``vqa train``: LoRA / QLoRA fine-tuning of the Qwen-VL reasoner on a labelled CSV, trained as it infers.

- ``options``: the training settings and their checks;
- ``examples``: each row's tool evidence through the graph (and the tool cache), and the batches the model sees;
- ``run``: one run: the checks, the evidence, the model with its LoRA, the Trainer, the adapter and its manifest;
- ``trainer``: ``transformers.Trainer`` with per-epoch letter-scoring accuracy, and the callbacks that keep the
  best adapter and write the log;
- ``logbook``: ``train_log.jsonl`` and the loss/accuracy plot;
- ``manifest``: what an adapter was trained on, checked when ``--adapter`` applies it.

Importing this package imports no torch.
"""
