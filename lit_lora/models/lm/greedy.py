"""Greedy decoding that drops each row from the batch, and from its key/value cache, once it has stopped.

Hugging Face's ``generate`` keeps a finished row in the batch (fed padding) until the last row stops, so
a batch costs rows x the longest reply. Here a row leaves as soon as it emits a stop token: the cost
follows the sum of the replies' lengths, and the tokens are the same as ``generate(do_sample=False)``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lit_lora.models.lm.choice_scores import cache_keyword, prefill

# Generation-config settings under which Hugging Face's greedy search is not a plain argmax (it edits
# the logits, or searches beams), each with the values that leave it a plain argmax.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "num_beams": (None, 1),
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),  # a decoder-only model's "encoder input" is its prompt
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None, []),
    "sequence_bias": (None, {}),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []),
    "exponential_decay_length_penalty": (None,),
    "guidance_scale": (None, 1.0),
    "remove_invalid_values": (None, False),
    "watermarking_config": (None,),
}


def is_plain_greedy(generation_config: Any) -> bool:
    """Whether ``generate(do_sample=False)`` under ``generation_config`` is an argmax per step."""
    return all(getattr(generation_config, name, None) in neutral for name, neutral in _NEUTRAL.items())


def _can_drop_rows(cache: Any) -> bool:
    # Static and linear-attention (recurrent) layers, and legacy tuple caches, cannot select rows.
    layers = getattr(cache, "layers", None)
    return layers is not None and all(hasattr(layer, "batch_select_indices") for layer in layers)


# no_grad, not inference_mode: tensors made in inference mode (a module's lazily built buffer) cannot be
# saved for backward or updated in place afterwards, and a callback may generate in mid-training.
@torch.no_grad()
def greedy_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    stop_ids: set[int],
    pad_id: int,
    any_rank_running: Callable[[bool], bool] | None = None,
) -> list[list[int]]:
    """Each left-padded prompt's greedy continuation: new token ids, ending with its stop token if any.

    ``model`` is a causal LM (or a PEFT model around one) whose forward takes ``position_ids``, a cache
    and ``logits_to_keep``. Positions come from the mask, as in ``generate``, so padding does not shift
    a row. A cache that cannot drop rows keeps finished rows, fed ``pad_id`` as ``generate`` does: the
    same tokens at the old cost. The model's train/eval mode is left alone.

    ``any_rank_running`` (a collective: every rank calls it once per step with whether it still
    generates) keeps ranks in step where every forward needs all of them (ZeRO-3): a rank that is done
    runs throwaway one-token forwards until no rank generates, as ``generate(synced_gpus=True)`` does.
    """
    generated: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    if max_new_tokens < 1:
        return generated
    out, position = prefill(model, input_ids, attention_mask)
    keyword = cache_keyword(model)
    cache, mask, position = getattr(out, keyword), attention_mask, position[:, -1:]
    if cache is None:  # each step would see only its own token
        raise ValueError("greedy_generate needs a model that returns its key/value cache")
    drop = _can_drop_rows(cache)
    rows = list(range(input_ids.shape[0]))  # the prompt each batch row continues
    finished: set[int] = set()
    done_here = False
    for step in range(max_new_tokens):
        if not done_here:
            tokens = out.logits[:, -1].argmax(dim=-1)
            keep = []  # batch rows still running
            for i, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
                if row in finished:
                    continue
                generated[row].append(token)
                if token in stop_ids:
                    finished.add(row)
                else:
                    keep.append(i)
            done_here = not keep or step == max_new_tokens - 1
        if any_rank_running is None:
            if done_here:
                break
        elif not any_rank_running(not done_here):
            break
        elif done_here:  # another rank still generates: join its weight gathers, output unused
            model(input_ids=input_ids[:1, -1:], attention_mask=attention_mask[:1, -1:], logits_to_keep=1)
            continue
        if drop and len(keep) < len(rows):
            index = torch.tensor(keep, device=tokens.device)
            cache.batch_select_indices(index)
            tokens, mask, position = tokens[index], mask[index], position[index]
            rows = [rows[i] for i in keep]
        elif not drop:
            done = torch.tensor([row in finished for row in rows], device=tokens.device)
            tokens = tokens.masked_fill(done, pad_id)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        position = position + 1
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position,
            use_cache=True,
            **{keyword: cache},
            logits_to_keep=1,
        )
    return generated
