"""Mid-epoch resume of the training loader, where Lightning (2.6) skips it."""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.data import _set_sampler_epoch


def resume_train_loader_position(trainer: L.Trainer) -> None:
    """Continue the interrupted epoch at the batch after the checkpoint, not at its first batch.

    Lightning restores a stateful loader (``StatefulDataLoader``) only if it builds the loader after
    reading the checkpoint, but ``trainer.estimated_stepping_batches`` (the LR schedule's and AdaLoRA's
    length) builds it earlier, so the saved position is left unused and the epoch restarts from
    batch 0. Called from ``on_train_start``, after the checkpoint is read and before any batch is drawn.
    """
    loop = trainer.fit_loop
    pending = loop._combined_loader_states_to_load
    if not (pending and loop.restarting and loop._combined_loader is not None and loop._data_fetcher):
        return
    for loader in loop._combined_loader.flattened:
        # The loader skips the batches already trained when it loads its state: the sampler must
        # produce the interrupted epoch's order by then.
        _set_sampler_epoch(loader, loop.epoch_progress.current.processed)
    loop._combined_loader._load_state_dicts(pending)
    loop._combined_loader_states_to_load = []
    iter(loop._data_fetcher)  # a fresh iterator that starts from the restored position
