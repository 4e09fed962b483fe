"""Rules of the settings that fit a bigger model (``peft``, ``train.strategy``, ``train.activation_checkpointing``):
values only, no torch. What depends on the model or the installed libraries (QLoRA) is checked before dispatch by
``hpc_ft.train.fit_checks``."""

from __future__ import annotations

from hpc_ft.config.schema import PEFT_METHODS, QUANTIZE, STRATEGIES, JobConf
from hpc_ft.errors import Problem


def fit_problems(conf: JobConf) -> list[Problem]:
    """Problems of the ``peft`` group and ``train.strategy`` (each names the key, the value, the rule, the fix)."""
    p: list[Problem] = []
    pf, t = conf.peft, conf.train

    def need(ok: bool, key: str, value: object, rule: str, fix: str) -> None:
        if not ok:
            p.append(Problem(key, value, rule, fix))

    need(t.strategy in STRATEGIES, "train.strategy", t.strategy, f"must be one of {', '.join(STRATEGIES)}",
         "pass train.strategy=ddp (or fsdp to shard the model over the workers)")
    need(pf.method in PEFT_METHODS, "peft.method", pf.method, f"must be one of {', '.join(PEFT_METHODS)}",
         "pass peft=lora (or peft=none)")
    need(pf.quantize in QUANTIZE, "peft.quantize", pf.quantize, f"must be one of {', '.join(QUANTIZE)}",
         "pass peft.quantize=none (or 4bit)")
    if pf.method == "lora":
        need(isinstance(pf.r, int) and pf.r >= 1, "peft.r", pf.r, "must be a positive whole number (the rank)",
             "pass peft.r=8")
        need(pf.alpha > 0, "peft.alpha", pf.alpha, "must be positive (the update is scaled by alpha / r)",
             "pass peft.alpha=16")
        need(0.0 <= pf.dropout < 1.0, "peft.dropout", pf.dropout, "must be within [0, 1)", "pass peft.dropout=0.05")
        targets = pf.target_modules
        need(targets is None or (len(targets) > 0 and all(isinstance(x, str) and x for x in targets)),
             "peft.target_modules", targets, "must be null (the architecture's default) or a list of module names",
             "pass peft.target_modules=null or peft.target_modules=[q_proj,v_proj]")
    if pf.quantize == "4bit":
        need(pf.method == "lora", "peft.quantize", pf.quantize, "a 4-bit base is frozen: only LoRA adapters on it "
             "can be trained (QLoRA)", "pass peft=lora peft.quantize=4bit, or peft.quantize=none")
        need(t.strategy == "ddp", "peft.quantize", pf.quantize, "bitsandbytes' 4-bit weights cannot be sharded by "
             "FSDP2 (fully_shard)", "pass train.strategy=ddp (a 4-bit base is small enough to keep whole)")
    return p
