"""LoRA on the learner (learner.lora): peft adapters over a frozen base, and the merged weights every sync sends.

The rollout engines only ever see merged Hugging Face weights under the base's own names: vLLM applies no LoRA to
the vision tower, and PreResQ trains it. Each merged tensor is W + s * B @ A computed in float32 into a new tensor;
the base is never merged into in place (merge then unmerge in bf16 drifts it). The reference model of the KL term
is the same module with its adapters switched off (`reference_forward`), not a second copy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

ADAPTER = "default"  # peft's name for the one adapter
LANGUAGE_PREFIX = "model.language_model."
VISION_PREFIX = "model.visual."


@dataclass(frozen=True)
class LoraSettings:
    """learner.lora: rank 0 is full fine-tuning. Targets are module-name leaves (q_proj, qkv, ...) within the
    language model and, separately, the vision tower; an empty list leaves that tower frozen."""

    rank: int
    alpha: float
    dropout: float
    language_targets: tuple[str, ...]
    vision_targets: tuple[str, ...]

    @classmethod
    def from_config(cls, lora) -> LoraSettings:
        return cls(int(lora.rank), float(lora.alpha), float(lora.dropout), tuple(lora.language_targets),
                   tuple(lora.vision_targets))

    @property
    def enabled(self) -> bool:
        return self.rank > 0


def target_names(model: torch.nn.Module, settings: LoraSettings) -> list[str]:
    """The full names of the linear layers to adapt: a language leaf under model.language_model., a vision leaf
    under model.visual. (Qwen2.5-VL's vision MLP has gate_proj too, and its patch embedding a Conv3d `proj`). A
    leaf that names no linear layer is a ValueError (OpenRLHF#1349: adapters on absent names train nothing)."""
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    chosen = []
    for prefix, leaves, key in ((LANGUAGE_PREFIX, settings.language_targets, "language_targets"),
                                (VISION_PREFIX, settings.vision_targets, "vision_targets")):
        for leaf in leaves:
            hits = [n for n in linear if n.startswith(prefix) and n.rsplit(".", 1)[-1] == leaf]
            if not hits:
                raise ValueError(f"config key 'learner.lora.{key}': {leaf!r} names no linear layer under {prefix} "
                                 "of this model")
            chosen += hits
    return sorted(chosen)


def add_adapters(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """`model` wrapped by peft with fp32 adapters on `target_names`; the base frozen in its own dtype."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=target_names(model, settings), bias="none")
    wrapped = get_peft_model(model, config, autocast_adapter_dtype=True)
    for param in wrapped.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # adapters in fp32 whatever the base's dtype
    return wrapped


def is_adapted(module: torch.nn.Module) -> bool:
    return hasattr(module, "peft_config")


def lora_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Base-named module path -> peft LoRA layer (its base_layer, lora_A, lora_B)."""
    from peft.tuners.lora import LoraLayer

    base = module.get_base_model()
    return {name: layer for name, layer in base.named_modules() if isinstance(layer, LoraLayer)}


def base_name(peft_name: str) -> str:
    """A peft parameter name under the base model -> the base's own ('q_proj.base_layer.weight' -> 'q_proj.weight')."""
    return peft_name.replace(".base_layer.", ".")


def merged_float(layer) -> torch.Tensor:
    """W + s * B @ A as a new float32 tensor (the layer is not modified)."""
    a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    delta = (b.detach().float() @ a.detach().float()) * layer.scaling[ADAPTER]
    return layer.base_layer.weight.detach().float() + delta


def merged_weights(module: torch.nn.Module, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Hugging Face-named full weights of an adapted module, on CPU in `dtype` (parameters gathered by the caller
    under ZeRO-3), and each one's checksum before the cast (models/weights.sample_checksum)."""
    from models.weights import sample_checksum

    layers = lora_layers(module)
    out, before_cast = {}, {}
    for name, tensor in module.get_base_model().state_dict().items():
        if ".lora_" in name or (name.endswith(".base_layer.weight") and name[: -len(".base_layer.weight")] in layers):
            continue
        out[base_name(name)] = tensor.detach().to("cpu", dtype).clone()
        before_cast[base_name(name)] = sample_checksum(tensor)
    for name, layer in layers.items():
        merged = merged_float(layer)
        before_cast[f"{name}.weight"] = sample_checksum(merged)
        out[f"{name}.weight"] = merged.to("cpu", dtype)
    return out, before_cast


def merged_named_parameters(module: torch.nn.Module):
    """(Hugging Face name, parameter or LoRA layer) of an adapted module, in parameter order, for a sync that
    streams one tensor at a time (vLLM's nccl/ipc transfer): a LoRA layer's entry stands for its merged weight."""
    layers = lora_layers(module)
    for name, param in module.get_base_model().named_parameters():
        if ".lora_" in name:
            continue
        if name.endswith(".base_layer.weight") and name[: -len(".base_layer.weight")] in layers:
            yield base_name(name), layers[name[: -len(".base_layer.weight")]]
        else:
            yield base_name(name), param


def delta_parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    """The adapters' B matrices: a change of one always moves its merged weight (A is never 0), while A's change
    moves nothing while B is still 0 (weight decay on a first step without gradient): the sync check's
    evidence that the learner changed (actors/weight_sync.check_delivery)."""
    return [layer.lora_B[ADAPTER].weight for layer in lora_layers(module).values()]


def reference_forward(module: torch.nn.Module):
    """The context under which `module` computes as its base (the KL reference): adapters off."""
    return module.disable_adapter() if is_adapted(module) else contextlib.nullcontext()


def adapter_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors under peft's own names (what an adapter folder holds), on CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(module).items()}
