"""The one training loop of lbnb: every trainable model is fitted by :func:`train`.

Generic on purpose (it knows nothing about images): a model, a tensor of inputs (N, ...) and a
``loss_fn(model, batch) -> per-sample losses (B,)``. Choices that differ from the official LLBNAD code
(DESIGN §1, defect 3):

- the budget is counted in **optimizer iterations** (stage 1 of the paper trains each sub-model for a
  fixed, short number of iterations ``T``), never in epochs;
- AdamW with decoupled weight decay that is really applied — to weight matrices / kernels
  (``ndim >= 2``); biases and normalisation scales are not decayed;
- the learning rate is constant or follows one cosine from ``lr`` to ``lr * final_lr_fraction`` over
  the whole budget, after an optional linear warm-up (no 10×-per-epoch decay);
- batches are drawn from seeded permutations (an "epoch" only means one pass over a permutation);
  dropout and any other randomness inside the loop use a forked RNG seeded from ``random_state``, so
  a run is reproducible and torch's global RNG is left untouched;
- every ``record_every`` iterations the per-sample loss of **every** input is evaluated (eval mode,
  no gradients), giving the (n_records, N) loss trajectories the learning-bias argument is about.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .detector_base import resolve_device

LossFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainResult:
    """What a call to :func:`train` did.

    ``batch_losses`` (n_iterations,): mean loss of each training batch (train mode, before the step);
    ``learning_rates`` (n_iterations,): the rate used at each step;
    ``history`` (n_records, N): per-sample values recorded every ``record_every`` iterations, or an
    empty (0, N) array when recording is off; ``record_iterations`` (n_records,): how many optimizer
    steps had been taken at each record (0 = the untrained model);
    ``n_iterations``: steps taken; ``seconds``: wall time of the whole call.
    """

    batch_losses: np.ndarray
    learning_rates: np.ndarray
    history: np.ndarray
    record_iterations: np.ndarray
    n_iterations: int
    seconds: float


def learning_rate(step: int, n_iterations: int, lr: float, schedule: str = "cosine", warmup: int = 0,
                  final_lr_fraction: float = 0.0) -> float:
    """The rate for optimizer step ``step`` (0-based) of ``n_iterations``.

    Linear warm-up over the first ``warmup`` steps ((step + 1) / warmup · lr), then ``"constant"``
    (lr) or ``"cosine"``: lr_min + ½ (lr − lr_min)(1 + cos(π s / S)) with s = step − warmup,
    S = n_iterations − warmup and lr_min = lr · ``final_lr_fraction`` (so the first step after the
    warm-up uses lr and the rate approaches lr_min at the end).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    span = max(1, n_iterations - warmup)
    low = lr * final_lr_fraction
    return low + 0.5 * (lr - low) * (1.0 + math.cos(math.pi * (step - warmup) / span))


def batch_indices(n: int, batch_size: int, n_iterations: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches for ``n_iterations`` steps: consecutive slices of fresh random permutations of
    range(n), each of ``min(batch_size, n)`` indices (a permutation's tail shorter than a batch is
    completed from the next permutation, so every sample is seen equally often)."""
    b = min(batch_size, n)
    needed = b * n_iterations
    perms = [torch.randperm(n, generator=generator) for _ in range(-(-needed // n))]
    order = torch.cat(perms)[:needed] if perms else torch.zeros(0, dtype=torch.long)
    return list(order.view(n_iterations, b)) if n_iterations else []


@torch.no_grad()
def evaluate_per_sample(model: torch.nn.Module, inputs: torch.Tensor, fn: LossFn, batch_size: int,
                        device: torch.device) -> np.ndarray:
    """``fn(model, batch)`` for every input, (N,) float64, in eval mode without gradients (the
    model's previous train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        values = fn(model, inputs[start:start + batch_size].to(device))
        out.append(values.detach().double().reshape(-1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(model: torch.nn.Module, inputs: torch.Tensor, loss_fn: LossFn, *, n_iterations: int,
          batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 0.0, schedule: str = "cosine",
          warmup: int = 0, final_lr_fraction: float = 0.0, max_grad_norm: float | None = None,
          random_state: int = 0, device: str | torch.device = "cpu", record_every: int = 0,
          record_fn: LossFn | None = None, eval_batch_size: int = 64, progress: bool = True,
          desc: str = "training") -> TrainResult:
    """Train ``model`` in place with AdamW for exactly ``n_iterations`` steps.

    Args:
        model: the torch module (moved to ``device``; left in eval mode afterwards).
        inputs: (N, ...) tensor; batches are ``inputs[idx]`` (B, ...) moved to ``device``.
        loss_fn: ``loss_fn(model, batch) -> (B,)`` per-sample losses; the step minimises their mean.
        n_iterations: optimizer steps T (≥ 1).
        batch_size: B (capped at N).
        lr, weight_decay, schedule, warmup, final_lr_fraction: see :func:`learning_rate`; AdamW's
            decoupled decay multiplies each decayed weight by (1 − lr_t · weight_decay) per step.
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        random_state: seeds batch sampling and the forked RNG used by dropout inside the loop.
        record_every: every this many steps (and at step 0 and at the end) evaluate ``record_fn`` —
            by default ``loss_fn`` — on all N inputs; 0 disables recording.
        record_fn: ``(model, batch) -> (B,)`` values to record instead of the loss.
        eval_batch_size: batch size of the recording passes.
        progress: show a tqdm bar.

    Returns a :class:`TrainResult`. Raises ValueError on bad arguments and FloatingPointError when
    the loss becomes NaN or infinite.
    """
    t0 = time.perf_counter()
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor (N, ...), got {type(inputs).__name__}")
    n = len(inputs)
    if n < 1:
        raise ValueError("inputs is empty: nothing to train on")
    if int(n_iterations) != n_iterations or n_iterations < 1:
        raise ValueError(f"n_iterations must be an integer >= 1, got {n_iterations}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0 or weight_decay < 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    if record_every < 0 or warmup < 0:
        raise ValueError(f"record_every and warmup must be >= 0, got {record_every}, {warmup}")
    learning_rate(0, n_iterations, lr, schedule)  # validates the schedule name
    n_iterations = int(n_iterations)
    dev = resolve_device(device) if isinstance(device, str) else device
    model.to(dev)
    record = record_fn or loss_fn
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999))
    generator = torch.Generator().manual_seed(int(random_state))
    batches = batch_indices(n, batch_size, n_iterations, generator)
    data = inputs.to(dev) if dev.type != "cpu" else inputs

    losses, rates, history, recorded = [], [], [], []

    def snapshot(step: int) -> None:
        history.append(evaluate_per_sample(model, data, record, eval_batch_size, dev))
        recorded.append(step)

    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(random_state) + 1)  # dropout etc.; global state is restored on exit
        if record_every:
            snapshot(0)
        model.train()
        bar = tqdm(range(n_iterations), desc=desc, unit="it", disable=not progress, leave=False)
        for step in bar:
            rate = learning_rate(step, n_iterations, lr, schedule, warmup, final_lr_fraction)
            for group in optimizer.param_groups:
                group["lr"] = rate
            per_sample = loss_fn(model, data[batches[step].to(dev)])
            if per_sample.ndim != 1 or len(per_sample) != len(batches[step]):
                raise ValueError(f"loss_fn must return per-sample losses of shape ({len(batches[step])},), "
                                 f"got {tuple(per_sample.shape)}")
            loss = per_sample.mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss.item()} at iteration {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
            rates.append(rate)
            done = step + 1
            if record_every and (done % record_every == 0 or done == n_iterations):
                snapshot(done)
            if progress and done % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    hist = np.stack(history) if history else np.zeros((0, n))
    return TrainResult(np.asarray(losses), np.asarray(rates), hist, np.asarray(recorded, dtype=np.int64),
                       n_iterations, time.perf_counter() - t0)
