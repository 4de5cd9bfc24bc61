"""The parts of the ``trl`` backend (:mod:`provenir.train.backends.trl`), one module per concern.

* :mod:`.loading`: the model (quantized for QLoRA), its LoRA adapter and the tokenizer;
* :mod:`.loop`: the worker loop every method shares (seeding, trainer arguments, callbacks,
  train, evaluate, save), run in process or on each Ray Train worker;
* :mod:`.sft`, :mod:`.dpo`: what differs per method: the rows prepared on the driver and the TRL
  trainer built on the worker; a new method (GRPO) is one more such module;
* :mod:`.outputs`: what a run writes (the adapter, the checkpoints ``--resume`` continues from);
* :mod:`.callbacks`: progress lines, the step a stop came at, observability sinks.

Hosting a loop on Ray Train stays in :mod:`provenir.distributed.train`, which takes the loop as a
callable and imports nothing of ``provenir.train``.
"""
