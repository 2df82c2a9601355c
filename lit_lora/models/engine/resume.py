"""Resume of the training loader where Lightning (2.6) gets it wrong: the mid-epoch position, and the
next epoch's order and iterator seed after a checkpoint at an epoch's last batch or end."""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.data import _set_sampler_epoch


def resume_train_loader_position(trainer: L.Trainer) -> bool:
    """Continue the interrupted epoch at the batch after the checkpoint, not at its first batch.

    Lightning restores a stateful loader (``StatefulDataLoader``) only if it builds the loader after
    reading the checkpoint, but ``trainer.estimated_stepping_batches`` (the LR schedule's and AdaLoRA's
    length) builds it earlier, so the saved position is left unused and the epoch restarts from
    batch 0. Called from ``on_train_start``, after the checkpoint is read and before any batch is drawn.

    Returns True when the checkpoint was taken after an epoch's last batch or at its end
    (``on_train_epoch_end``, where ModelCheckpoint saves once an epoch): then nothing of that epoch is
    left and ``start_next_epoch`` must run once the RNG is restored.
    """
    loop = trainer.fit_loop
    if loop.resumed_on_epoch_end and loop._data_fetcher is not None:
        # Lightning does not count this as a restart: it leaves the saved position unread and trains
        # the next epoch with the iterator it built in setup_data, before the RNG was restored.
        loop._combined_loader_states_to_load = []
        return True
    pending = loop._combined_loader_states_to_load
    if not (pending and loop.restarting and loop._combined_loader is not None and loop._data_fetcher):
        return False
    if loop.epoch_loop.restarted_on_train_batch_end and loop.epoch_loop.batch_progress.is_last_batch:
        # Lightning has already counted that epoch as done and trains the next one with this loader;
        # the saved position (the end) would leave it empty.
        loop._combined_loader_states_to_load = []
        return True
    for loader in loop._combined_loader.flattened:
        # The loader skips the batches already trained when it loads its state: the sampler must
        # produce the interrupted epoch's order by then.
        _set_sampler_epoch(loader, loop.epoch_progress.current.processed)
    loop._combined_loader._load_state_dicts(pending)
    loop._combined_loader_states_to_load = []
    iter(loop._data_fetcher)  # a fresh iterator that starts from the restored position
    return False


def start_next_epoch(trainer: L.Trainer) -> None:
    """The first epoch after a checkpoint taken at an epoch's last batch or end, as an uninterrupted run
    has it.

    Lightning built this loader's iterator before the sampler knew the new epoch (wrong order) and
    before the RNG was restored (an uninterrupted run draws the iterator's seed after the checkpoint's
    RNG state, not before).
    """
    loop = trainer.fit_loop
    assert loop._combined_loader is not None and loop._data_fetcher is not None
    for loader in loop._combined_loader.flattened:
        _set_sampler_epoch(loader, loop.epoch_progress.current.processed)
    iter(loop._data_fetcher)
