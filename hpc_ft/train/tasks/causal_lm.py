"""Causal language modelling: supervised fine-tuning on prompt/response pairs or chat messages (loss on the
response tokens only), and plain next-token training on text.

Labels carry ``IGNORE_INDEX`` (-100) wherever a token is left out of the loss: prompt tokens, padding, and in SFT
every turn that is not the assistant's. Evaluation sums the token loss, the counted tokens and the correctly
predicted ones: eval loss (mean per token), perplexity (its exponential) and token accuracy.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.train.tasks.base import IGNORE_INDEX, LABELS, instantiate, is_file_data, is_hf_model
from hpc_ft.train.tasks.classification import logits_of
from hpc_ft.train.tasks.files import FileEncoding, attention_mask, build_file_data, pad

# torch is imported where a tensor is made: the checks before dispatch build these tasks without it.
if TYPE_CHECKING:
    import torch

    from hpc_ft.train.data import TaskData

log = logging.getLogger("hpc_ft.train")


def shifted_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of each position's prediction of the next token, over the labelled tokens only (float32).

    ``mean``: per labelled token (0 when a micro-batch has none, rather than NaN); ``sum``: summed.
    """
    # Shift the labels, not the logits: position t is scored against label t+1 and the last position against
    # nothing. ``logits[:, :-1]`` would copy the whole [batch, seq, vocab] tensor (forward and backward: tens of
    # ms per step for a 30k vocabulary on a CPU); the flat view below copies nothing in fp32.
    import torch.nn.functional as F

    pred = logits.float().reshape(-1, logits.shape[-1])
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
    total = F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="sum")
    if reduction == "sum":
        return total
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


class CausalLM:
    """Plain causal-LM training on ``data.text_field``: every real token is predicted (packing optional)."""

    SUMS = ("loss_sum", "tokens", "correct")
    METRICS = ("eval_loss", "eval_perplexity", "eval_token_accuracy")
    AUTO_CLASS = "causal_lm"

    # --- data and model ---------------------------------------------------------------------------------------

    def build_data(self, conf: Any) -> TaskData:
        if is_file_data(conf.data):
            return build_file_data(self, conf.data, conf.model)
        return instantiate(conf.data)

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        pad_id = data.info.get("pad_token_id")
        return {} if pad_id is None else {"pad_token_id": pad_id}

    def build_model(self, model_conf: Any, model_kwargs: dict[str, Any]) -> torch.nn.Module:
        """``model=hf``: AutoModelForCausalLM; else the model's ``_target_`` (its forward returns logits)."""
        if is_hf_model(model_conf):
            return instantiate(model_conf, _convert_="all", auto_class=self.AUTO_CLASS, **model_kwargs)
        return instantiate(model_conf, **model_kwargs)

    # --- data=files -------------------------------------------------------------------------------------------

    def required_fields(self, spec: Any) -> list[str]:
        return ["text_field"]

    def label_set(self, spec: Any) -> None:
        return None

    def file_problems(self, spec: Any) -> list[Problem]:
        return []

    def encoder(self, raw: Any, tokenizer: Any, spec: Any) -> FileEncoding:
        field, max_length = spec.text_field, spec.max_length
        eos = tokenizer.eos_token_id

        def encode(batch: dict[str, list]) -> dict[str, list]:
            ids = tokenizer([str(t) for t in batch[field]], add_special_tokens=True)["input_ids"]
            ids = [e + [eos] if eos is not None and (not e or e[-1] != eos) else e for e in ids]
            return {"input_ids": [e[:max_length] for e in ids], "labels": [e[:max_length] for e in ids],
                    "truncated": [len(e) > max_length for e in ids]}

        return FileEncoding(encode, {"eos": eos})

    def collate(self, rows: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
        """Pad to the micro-batch's longest row; padding is masked out of attention and labels."""
        return {"input_ids": pad(rows["input_ids"], pad_id), "attention_mask": attention_mask(rows["input_ids"]),
                LABELS: pad(rows[LABELS], IGNORE_INDEX)}

    # --- step and evaluation ----------------------------------------------------------------------------------

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over the micro-batch's labelled tokens."""
        return shifted_token_loss(outputs, batch[LABELS])

    # A step optimises the mean over every labelled token of the global batch, not the mean of micro-batch means
    # (hpc_ft.train.loss_scale): the loop divides the summed loss by the global batch's token count.
    def loss_sum(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token cross-entropy summed over the micro-batch's labelled tokens (float32)."""
        return shifted_token_loss(outputs, batch[LABELS], reduction="sum")

    def loss_count(self, batch: dict[str, torch.Tensor]) -> int:
        """The labelled tokens ``loss_sum`` sums over (predicted positions: the first token is never a target)."""
        return int((batch[LABELS][:, 1:] != IGNORE_INDEX).sum())

    def add_eval_sums(self, sums: torch.Tensor, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        target = batch[LABELS][:, 1:]
        mask = target != IGNORE_INDEX
        sums[0] += shifted_token_loss(outputs, batch[LABELS], reduction="sum")
        sums[1] += mask.sum()
        sums[2] += ((outputs[:, :-1].argmax(-1) == target) & mask).sum()

    def eval_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        n = max(1.0, float(sums[1]))
        loss = float(sums[0]) / n
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 700.0)),
                "eval_token_accuracy": float(sums[2]) / n}

    def describe(self, metrics: dict[str, float]) -> str:
        return (f"eval loss {metrics['eval_loss']:.3f}, perplexity {metrics['eval_perplexity']:.2f}, "
                f"token accuracy {metrics['eval_token_accuracy']:.3f}")

    def baseline(self, data: TaskData) -> dict[str, float]:
        """The perplexity of the eval tokens' own unigram distribution: the best a model that ignores context can
        do (a fine-tuned model should be well below it)."""
        import torch

        counts: dict[int, int] = {}
        for start in range(0, data.num_test, 1024):
            labels = data.test.take(torch.arange(start, min(data.num_test, start + 1024)))[LABELS] \
                if not isinstance(data.test, dict) else data.test[LABELS][start:start + 1024]
            target = labels[:, 1:]
            ids, n = torch.unique(target[target != IGNORE_INDEX], return_counts=True)
            for i, c in zip(ids.tolist(), n.tolist()):
                counts[i] = counts.get(i, 0) + c
        total = sum(counts.values())
        if not total:
            return {"unigram_perplexity": None}
        entropy = -sum(c / total * math.log(c / total) for c in counts.values())
        return {"unigram_perplexity": math.exp(entropy)}

    def flops_per_sample(self, model: torch.nn.Module, data: TaskData) -> float | None:
        """6 x non-embedding parameters x mean tokens per example (forward + backward, dense estimate)."""
        params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
        return 6.0 * params * (data.seq_len or 1)


class CausalLMSFT(CausalLM):
    """Supervised fine-tuning: loss only on the response (the assistant's turns); the prompt and padding are
    masked. Examples are ``prompt_field`` + ``response_field``, or ``messages_field`` (chat messages), rendered with
    the tokenizer's chat template when it has one (else ``role: content`` lines)."""

    def required_fields(self, spec: Any) -> list[str]:
        if spec.messages_field is not None:
            return ["messages_field"]
        return ["prompt_field", "response_field"]

    def file_problems(self, spec: Any) -> list[Problem]:
        if spec.messages_field is not None and (spec.prompt_field or spec.response_field):
            return [Problem("data.messages_field", spec.messages_field, "set together with data.prompt_field/"
                            "response_field: an SFT example is either chat messages or a prompt/response pair",
                            "leave data.messages_field or the prompt/response fields unset")]
        return []

    def encoder(self, raw: Any, tokenizer: Any, spec: Any) -> FileEncoding:
        max_length = spec.max_length
        template = getattr(tokenizer, "chat_template", None)
        if spec.messages_field is not None and not template:
            _no_template_notice(tokenizer, spec.messages_field)

        def encode(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = {"input_ids": [], "labels": [], "truncated": []}
            n = len(next(iter(batch.values())))
            for i in range(n):
                if spec.messages_field is not None:
                    messages = batch[spec.messages_field][i]
                else:
                    messages = [{"role": "user", "content": str(batch[spec.prompt_field][i])},
                                {"role": "assistant", "content": str(batch[spec.response_field][i])}]
                ids, labels = sft_tokens(tokenizer, messages)
                out["input_ids"].append(ids[:max_length])
                out["labels"].append(labels[:max_length])
                out["truncated"].append(len(ids) > max_length)
            return out

        return FileEncoding(encode, {"template": template, "eos": tokenizer.eos_token_id})


def _no_template_notice(tokenizer: Any, messages_field: str) -> None:
    """Say once, on rank 0, that chat messages are rendered without a chat template (the fallback of ``_render``
    and ``sft_tokens``): a model trained on that format answers well only when prompted in it. Called where the
    run builds its data (``encoder``, once per run, cache hit or not)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return  # every rank builds the same data: one notice per run
    bos = "the BOS token first, " if tokenizer.bos_token_id is not None else ""
    eos = ", each assistant turn ended by the EOS token" if tokenizer.eos_token_id is not None else ""
    log.warning("warning: data.messages_field=%s: the tokenizer of model.path=%s has no chat template, so the chat "
                "messages are rendered as plain 'role: content' lines (%s'user: ...\\nassistant: ...'%s); prompt "
                "the trained model the same way. For the model's own chat format, give the tokenizer a chat template "
                "(set tokenizer.chat_template and save_pretrained it into model.path, or a chat_template entry in its "
                "tokenizer_config.json), or set model.path to a checkpoint whose tokenizer has one", messages_field,
                getattr(tokenizer, "name_or_path", None) or "?", bos, eos)


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if generation_prompt else "")


def sft_segments(tokenizer: Any, messages: list[dict]) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, trained) pieces: each assistant turn's own text is trained,
    everything else (system and user turns, the template's markup, the generation prompt) is not.

    Cut by rendering growing prefixes of the conversation; raises ConfigError when the chat template does not
    render a conversation as the extension of its prefixes (then no cut is right).
    """
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        head = _render(tokenizer, messages[:i], True) if i else ""
        full = _render(tokenizer, messages[:i + 1], False)
        if not (head.startswith(done) and full.startswith(head)):
            raise ConfigError([Problem("data.messages_field", "chat template", "the tokenizer's chat template does "
                                       "not render a conversation as an extension of its earlier turns, so the "
                                       "assistant's tokens cannot be told apart", "use prompt/response fields, or "
                                       "a tokenizer whose template appends turns")])
        segments += [(head[len(done):], False), (full[len(head):], True)]
        done = full
    rest = _render(tokenizer, messages, False)[len(done):]
    if rest:
        segments.append((rest, False))
    return [(t, trained) for t, trained in segments if t]


def sft_tokens(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation: labels are the ids on assistant text, IGNORE_INDEX elsewhere.

    Without a chat template, a BOS token (if the tokenizer has one) starts the text and an EOS token (if any)
    ends each assistant turn, trained, so the model learns to stop.
    """
    templated = bool(getattr(tokenizer, "chat_template", None))
    ids: list[int] = []
    labels: list[int] = []
    if not templated and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    for text, trained in sft_segments(tokenizer, messages):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        if trained and not templated and tokenizer.eos_token_id is not None:
            piece = piece + [tokenizer.eos_token_id]
        ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return ids, labels
