"""Model parameter randomization: cascading, independent and bottom-up (Adebayo et al. 2018, 4.1).

A stage is the set of units re-initialized at that point. ``randomized(...)`` is a context
manager: on entry it redraws the stage's units in place, on exit (also after an exception) it
copies the trained tensors back, bit-identical. No deepcopy of the model per stage; each unit
draws from its own generator derived from (seed, unit name), so a unit gets the same random
weights at every stage it is part of.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from benchmark import rng
from benchmark.config import BatchNormStats, Order, RandomizationConfig, Reinit
from benchmark.models import Architecture, unit_modules


# (the configured target rule's classes, the stage model's logits, the image ids) -> the classes to explain
TargetRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Stage:
    index: int  # 0 = the trained model
    layer: str  # unit randomized at this stage ('original' at stage 0)
    units: tuple[str, ...]  # every unit randomized in this stage's model
    # The classes this stage explains, from what the configured rule (``target``) chose; None: that rule's
    # classes (every stage of the paper's tests). The random-logit test's second stage draws another class.
    target: Optional[TargetRule] = None
    # The same units drawn a second time from generators derived from (seed, "null"): the fair null's model, whose
    # maps are compared with the stage's own (``randomization.fair_null``), never with stage 0's.
    null: bool = False


def stages(arch: Architecture, order: Order, units: Sequence[str] | None = None) -> list[Stage]:
    """Stage 0 (trained) followed by one stage per unit in the order's sequence."""
    chosen = list(arch.units) if units is None else list(units)
    for u in chosen:
        if u not in arch.units:
            raise ValueError(
                f"randomization.units has {u!r}, which model {arch.name!r} does not have; "
                f"its units are {list(arch.units)}"
            )
    if not chosen:
        raise ValueError("randomization.units is empty; list at least one unit or set it to null for all")
    twice = sorted({u for u in chosen if chosen.count(u) > 1})
    if twice:
        raise ValueError(f"randomization.units lists {twice[0]!r} twice; give each unit once, e.g. "
                         f"randomization.units=[{','.join(dict.fromkeys(chosen))}]")
    forward = [u for u in arch.units if u in chosen]  # forward order, whatever order was given
    out = [Stage(0, "original", ())]
    if order == Order.cascading:
        seq = forward[::-1]
        out += [Stage(i + 1, u, tuple(seq[: i + 1])) for i, u in enumerate(seq)]
    elif order == Order.bottom_up:
        out += [Stage(i + 1, u, tuple(forward[: i + 1])) for i, u in enumerate(forward)]
    elif order == Order.independent:
        seq = forward[::-1]
        out += [Stage(i + 1, u, (u,)) for i, u in enumerate(seq)]
    else:
        raise ValueError(f"randomization.order={order!r} is not one of {[o.value for o in Order]}")
    return out


def _state_tensors(modules: Sequence[nn.Module]) -> dict[int, torch.Tensor]:
    tensors: dict[int, torch.Tensor] = {}
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            tensors[id(t)] = t
    return tensors


def _stage_tensors(model: nn.Module, arch: Architecture, stage: Stage) -> dict[int, torch.Tensor]:
    """Every parameter and buffer of the units ``stage`` re-initializes."""
    return _state_tensors([m for u in stage.units for m in unit_modules(model, arch, u)])


@torch.no_grad()
def reinit_unit(modules: Sequence[nn.Module], arch: Architecture, cfg: RandomizationConfig,
                generator: torch.Generator) -> None:
    """Redraw one unit's parameters in place under the configured policy."""
    policy = Reinit(cfg.reinit) if cfg.reinit is not None else Reinit.layer_default
    for module in modules:
        if policy == Reinit.layer_default:
            arch.init_module(module, generator)
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                if policy == Reinit.layer_default and sub.affine:
                    sub.weight.fill_(1.0)
                    sub.bias.zero_()
                if BatchNormStats(cfg.batchnorm_stats) == BatchNormStats.reset:
                    sub.reset_running_stats()
        if policy == Reinit.layer_default:
            continue
        for p in module.parameters():
            if policy == Reinit.truncated_normal:
                nn.init.trunc_normal_(p, 0.0, cfg.std, -2 * cfg.std, 2 * cfg.std, generator=generator)
            else:  # uniform with the variance of N(0, std^2)
                a = math.sqrt(3.0) * cfg.std
                nn.init.uniform_(p, -a, a, generator=generator)


def _reinit_on_cpu(modules: Sequence[nn.Module], arch: Architecture, cfg: RandomizationConfig,
                   generator: torch.Generator) -> None:
    """``reinit_unit`` with the draws made on the CPU (the generator's device), copied to the model's device.

    Same random weights whatever the device, and no CPU generator handed to a CUDA tensor.
    """
    tensors = [t for m in modules for t in list(m.parameters()) + list(m.buffers())]
    if all(t.device.type == "cpu" for t in tensors):
        reinit_unit(modules, arch, cfg, generator)
        return
    copies = [copy.deepcopy(m).cpu() for m in modules]
    reinit_unit(copies, arch, cfg, generator)
    with torch.no_grad():
        for live, new in zip(tensors, [t for c in copies for t in list(c.parameters()) + list(c.buffers())]):
            live.copy_(new)


@contextmanager
def randomized(model: nn.Module, arch: Architecture, stage: Stage, cfg: RandomizationConfig,
               seed: int, drawn: Optional[dict[int, torch.Tensor]] = None) -> Iterator[nn.Module]:
    """Re-initialize ``stage.units`` for the duration of the block; restore exactly afterwards.

    ``drawn``: the re-initialized values of every tensor drawn so far (by ``id`` of the live tensor), filled
    and reused across the stages of one run (with this model, ``cfg`` and ``seed``). A unit draws the same
    weights at every stage it is part of (its own generator), so a cascade draws each unit once instead of
    once per stage (large truncated-normal draws are slow). Holds at most one
    model's worth of weights; ``stage_state`` with the same dict shares the copies.
    """
    live = _stage_tensors(model, arch, stage)
    saved = {k: t.detach().clone() for k, t in live.items()}
    try:
        for unit in stage.units:
            modules = unit_modules(model, arch, unit)
            tensors = _state_tensors(modules)
            if drawn is not None and all(k in drawn for k in tensors):
                with torch.no_grad():
                    for k, t in tensors.items():
                        t.copy_(drawn[k])
                continue
            _reinit_on_cpu(modules, arch, cfg, rng.generator(seed, "reinit", unit))
            if drawn is not None:
                drawn.update({k: t.detach().clone() for k, t in tensors.items()})
        yield model
    finally:
        with torch.no_grad():
            for k, t in live.items():
                t.copy_(saved[k])


def stage_state(model: nn.Module, arch: Architecture, stage: Stage,
                held: Optional[dict[int, torch.Tensor]] = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(live tensor, copy of its current value) for every tensor ``stage`` re-initializes.

    Called inside ``randomized(...)``: the stage's model is the live model with this state swapped in
    (``benchmark.engine.swapped``), which is how several stages are explained at once.
    ``held``: copies shared across calls. A unit draws the same weights at every stage it is part of,
    so a tensor is copied the first time and the copy reused by every later stage.
    """
    held = {} if held is None else held
    out = []
    for key, t in _stage_tensors(model, arch, stage).items():
        if key not in held:
            held[key] = t.detach().clone()
        out.append((t, held[key]))
    return out


def stage_cut(model: nn.Module, arch: Architecture, stage: Stage) -> Optional[int]:
    """Index of the first step of ``model.steps()`` that ``stage`` changes (the step count at stage 0).

    None when the model has no steps, or its steps are not exactly its units: then stages run whole.
    """
    steps = getattr(model, "steps", None)
    if steps is None:
        return None
    names = [name for name, _ in steps()]
    if sorted(names) != sorted(arch.units):
        return None
    return min((names.index(u) for u in stage.units), default=len(names))
