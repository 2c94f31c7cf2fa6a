"""Training and fine-tuning VGGT models (``vggt-ros train``); imported only by the CLI.

* :mod:`.targets`: ground truth in VGGT's frame and scale;
* :mod:`.losses`: the paper's camera, depth, point and track losses;
* :mod:`.data`: training windows from the procedural renderer and ground-truth bags;
* :mod:`.config`: :class:`~.config.TrainConfig`, the whole run;
* :mod:`.checkpoints`: resumable run checkpoints, EMA weights, model export;
* :mod:`.trainer`: the loop (bf16, clipping, schedule, EMA, DDP, TensorBoard, validation);
* :mod:`.commands`: the CLI.
"""
