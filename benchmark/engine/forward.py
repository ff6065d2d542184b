"""Forward-only work: the target scores of masked copies of each image, for every ``Perturbation`` request.

Per image and fill, one *stream*: the distinct masks of every request with that fill (occlusion's windows,
leave-one-out's regions, LIME's samples; equal masks run once), with the unmasked image first. The streams'
items are packed into chunks sized to the memory budget and run under ``no_grad``; each chunk goes through
every stage's model, the steps below a stage's cut computed once for all stages (as the gradient passes do).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from benchmark.engine.state import swapped
from benchmark.methods.masks import fill_image
from benchmark.methods.primitives import Perturbation


@dataclass
class Stream:
    """One image's distinct masked copies for one fill; ``members`` maps each request to its masks, what its
    ``finish`` needs, and the rows of ``masks`` its masks are."""

    row: int
    x: torch.Tensor  # (C, H, W)
    fill: torch.Tensor  # (C, H, W)
    masks: torch.Tensor  # (n, H, W) bool; row 0 deletes nothing
    members: dict[Perturbation, tuple[torch.Tensor, Any, torch.Tensor]] = field(default_factory=dict)
    scores: list[torch.Tensor] = field(default_factory=list)  # per stage: (n, 2) target logit and probability

    def make(self, start: int, stop: int) -> torch.Tensor:
        m = self.masks[start:stop, None].to(self.x.device)
        return torch.where(m, self.fill[None], self.x[None])


def streams_for(requests: Sequence[Perturbation], x: torch.Tensor, image_ids: torch.Tensor, seed: int,
                rows: Optional[Sequence[int]] = None) -> list[Stream]:
    """The streams of the images at ``rows`` (all by default), one per fill; masks deduplicated across the requests
    of a fill."""
    groups: dict[Any, list[Perturbation]] = {}
    for p in requests:
        groups.setdefault(p.share(), []).append(p)
    streams = []
    for row in range(len(x)) if rows is None else rows:
        for group in groups.values():
            first = group[0]
            img = x[row]
            index: dict[bytes, int] = {}
            unique = [torch.zeros(img.shape[1:], dtype=torch.bool)]
            index[np.packbits(unique[0].numpy()).tobytes()] = 0
            members = {}
            for p in group:
                masks, aux = p.prepare(img, int(image_ids[row]), seed)
                at = []
                for m in masks:
                    key = np.packbits(m.numpy()).tobytes()
                    if key not in index:
                        index[key] = len(unique)
                        unique.append(m)
                    at.append(index[key])
                members[p] = (masks, aux, torch.tensor(at, dtype=torch.long))
            streams.append(Stream(row, img, fill_image(img, first.fill, first.blur_sigma), torch.stack(unique), members))
    return streams


def forward_item_bytes(item_bytes: int) -> int:
    """A forward pass without gradients holds the activations only: a third of a gradient item's estimate."""
    return max(1, item_bytes // 3)


def run_streams(streams: Sequence[Stream], plans: Sequence[Any], steps: Sequence[Callable], chunk: int,
                channels_last: bool, rewrite: Any, seconds: list[float], progress: Any = None) -> None:
    """Every stream's items through every plan's model; fills ``stream.scores`` (one entry per plan)."""
    for s in streams:
        s.scores = [torch.empty((len(s.masks), 2), dtype=torch.float32) for _ in plans]
    pieces: list[tuple[Stream, int, int]] = []
    filled = 0
    for s in streams:
        start = 0
        while start < len(s.masks):
            take = min(len(s.masks) - start, chunk - filled)
            pieces.append((s, start, start + take))
            filled += take
            start += take
            if filled == chunk:
                _chunk(pieces, plans, steps, channels_last, rewrite, seconds, progress)
                pieces, filled = [], 0
    if pieces:
        _chunk(pieces, plans, steps, channels_last, rewrite, seconds, progress)


def _chunk(pieces, plans, steps, channels_last, rewrite, seconds, progress) -> None:
    batch = torch.cat([s.make(a, b) for s, a, b in pieces])
    if channels_last and batch.dim() == 4:
        batch = batch.to(memory_format=torch.channels_last)
    with torch.no_grad(), (rewrite(()) if rewrite is not None else nullcontext()):
        start = time.perf_counter()
        shared = [batch]
        for step in steps[: max(p.cut for p in plans)]:
            shared.append(step(shared[-1]))
        seconds[0] += time.perf_counter() - start
        for k, plan in enumerate(plans):
            start = time.perf_counter()
            with swapped(plan.state):
                h = shared[plan.cut]
                for step in steps[plan.cut :]:
                    h = step(h)
            logits = h.float()
            target = torch.cat([plan.target[s.row].expand(b - a) for s, a, b in pieces])[:, None]
            got = torch.cat([logits.gather(1, target), torch.softmax(logits, 1).gather(1, target)], 1).cpu()
            offset = 0
            for s, a, b in pieces:
                s.scores[k][a:b] = got[offset : offset + b - a]
                offset += b - a
            seconds[k] += time.perf_counter() - start
    if progress is not None:
        progress.advance(len(batch) * len(plans))


def finish_streams(streams: Sequence[Stream], stage: int, out: dict[Perturbation, dict[int, torch.Tensor]]) -> None:
    """Each request's (1, H, W) map of every stream's image for one plan, into ``out[request][row]``."""
    for s in streams:
        for p, (masks, aux, rows) in s.members.items():
            col = 1 if p.output == "probability" else 0
            scores = s.scores[stage][:, col]
            out.setdefault(p, {})[s.row] = p.finish(s.x.cpu(), s.fill.cpu(), masks, aux, scores[rows], scores[0]).float()


def run_forward(requests: Sequence[Perturbation], x: torch.Tensor, image_ids: torch.Tensor, seed: int,
                plans: Sequence[Any], steps: Sequence[Callable], chunk: int, mask_budget: int, channels_last: bool,
                rewrite: Any, progress: Any = None) -> tuple[list[dict[Perturbation, torch.Tensor]], list[float], int]:
    """Every request's (B, 1, H, W) maps per plan, the seconds per plan, and the items run.

    Images are taken a few at a time, as many as keep their masks under ``mask_budget`` bytes (at least one), so
    memory does not grow with the number of images (LIME's 1000 masks of a 224 x 224 image are 50 MB)."""
    seconds = [0.0] * len(plans)
    maps: list[dict[Perturbation, dict[int, torch.Tensor]]] = [{} for _ in plans]
    items, start = 0, 0
    while start < len(x):
        streams: list[Stream] = []
        held = 0
        while start < len(x) and (not streams or held < mask_budget):
            new = streams_for(requests, x, image_ids, seed, rows=[start])
            held += sum(s.masks.numel() + sum(m.numel() for m, _, _ in s.members.values()) for s in new)
            streams += new
            start += 1
        run_streams(streams, plans, steps, chunk, channels_last, rewrite, seconds, progress)
        items += sum(len(s.masks) for s in streams)
        for k in range(len(plans)):
            finish_streams(streams, k, maps[k])
        del streams
    stacked = [{p: torch.stack([by_row[r] for r in range(len(x))]) for p, by_row in m.items()} for m in maps]
    return stacked, seconds, items
