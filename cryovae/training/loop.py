"""The trainer: split, Adam, plateau LR schedule, early stopping, atomic checkpoints.

:func:`fit` trains any registered model (:class:`cryovae.models.PoseVAE`: it calls
``model(y, ctf, ...)`` for the ELBO's terms) on a :class:`cryovae.data.ParticleDataset`, and
writes through a :class:`cryovae.runs.RunDir`. It is the only code that trains.

Everything random is a deterministic function of ``(seed, epoch)`` (initial weights from
``seed``; each epoch's data order from :class:`cryovae.data.SeededSampler` and its samples from
their own generators), so a run resumed from the checkpoint after epoch k gives the same weights
as an uninterrupted run.

checkpoint.pt is the source of truth: it is written before training starts (epoch 0) and after
every epoch, holds the whole metrics history (metrics.csv is rewritten from it on resume), and
is never overwritten with non-finite weights.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.data import ParticleDataset, SeededSampler, batch_loader, epoch_seed
from cryovae.device import CPU_BATCH
from cryovae.distributed import World
from cryovae.errors import CryovaeError, DamagedFileError, NonFiniteError
from cryovae.models import (
    CLASS_EXTRA,
    CTF_COLUMNS,
    ModelConfig,
    PoseVAE,
    RotationGuide,
    build_model,
    check_ctf_finite,
    compute_ctf,
)
from cryovae.runs import RunDir, TrainConfig, load_model_state, model_state

log = logging.getLogger(__name__)

#: one process (no torchrun)
SINGLE = World()

#: what a checkpoint.pt must hold to be resumed
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "best_elbo", "best_epoch", "bad_epochs",
               "split", "rng")


def _indices(value) -> np.ndarray:
    """A checkpoint's split (tensor, or numpy array in older checkpoints) as int64 indices."""
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError("split indices must be a 1-d integer array")
    return arr.astype(np.int64)


@dataclass
class FitResult:
    """What :func:`fit` leaves behind: the best model (eval mode) and the per-epoch history."""

    model: torch.nn.Module
    history: list[dict]
    best_epoch: int
    stopped_early: bool


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, val) index arrays; at least one training particle."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(int(round(n * val_fraction)), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """A torch generator seeded from (seed, epoch, stream); on ``device``."""
    g = torch.Generator(device=device)
    g.manual_seed(epoch_seed(seed, epoch, stream))
    return g


def seeded_model(model_cfg: ModelConfig, seed: int) -> PoseVAE:
    """A freshly initialised model of ``model_cfg`` whose weights are a function of ``seed``."""
    torch.manual_seed(seed)
    return build_model(model_cfg)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _batch_ctf(ctf_params: torch.Tensor | None, model_cfg: ModelConfig, device) -> torch.Tensor | None:
    if ctf_params is None or not model_cfg.ctf:
        return None
    return compute_ctf(ctf_params.to(device), model_cfg.box, model_cfg.pixel_size)


#: the sample streams of rank r > 0 are offset by r times this (rank 0's are those of one process)
RANK_STREAMS = 1000


def epoch_batches(sampler: SeededSampler, batch_size: int, world: World,
                  train: bool) -> tuple[list[np.ndarray], list[int]]:
    """This process's index batches of the sampler's epoch order, and the size of each step
    (the particles of every process together).

    One process: the order cut into batches of ``batch_size``. ``world.size`` processes: each step
    takes ``world.size * batch_size`` particles of the same order (so the particles of a step are
    those of one process with the larger batch) and this rank takes its part of each
    (``np.array_split``); a last training step with fewer particles than processes is left out
    (every process must take every step), and empty validation parts are skipped.
    """
    steps = sampler.batches(batch_size * world.size)
    if not world.distributed:
        return steps, [len(b) for b in steps]
    if train:
        steps = [b for b in steps if len(b) >= world.size]
    parts = [np.array_split(b, world.size)[world.rank] for b in steps]
    keep = [k for k, p in enumerate(parts) if train or len(p)]
    return [parts[k] for k in keep], [len(steps[k]) for k in keep]


#: on a CPU a training step runs its batch in micro-batches of at most this many particles, their
#: gradients summed (the same step; see :data:`cryovae.device.CPU_BATCH`)
CPU_MICRO_BATCH = CPU_BATCH


def micro_batches(n: int, device: torch.device) -> list[slice]:
    """The slices of a training step's ``n`` particles run one after the other on ``device`` (one
    slice on a GPU; on a CPU about equal ones of at most :data:`CPU_MICRO_BATCH`)."""
    if device.type != "cpu" or n <= CPU_MICRO_BATCH:
        return [slice(None)]
    bounds = np.linspace(0, n, -(-n // CPU_MICRO_BATCH) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def accumulate_gradients(step_model: torch.nn.Module, y: torch.Tensor, ctf: torch.Tensor | None, scale: float,
                         chunks: list[slice], *, generator: torch.Generator, zero_z: bool, rotate_encoder: bool,
                         ddp: bool = False, free_nats: float = 0.0,
                         guide: RotationGuide | None = None) -> tuple[list, tuple | None]:
    """The gradient of one training step, ``-scale * sum of the objectives`` (the ELBOs, with
    ``free_nats`` of free bits for z: :meth:`cryovae.models.LossTerms.objective`) of the particles
    ``y`` (B, box, box), added into the parameters' ``.grad`` one micro-batch (``chunks``) at a time.

    ddp : ``step_model`` is a DistributedDataParallel wrapper: only the last micro-batch's
        backward averages the gradients over the processes.
    guide : each particle's rotation from a 2D alignment (:class:`cryovae.models.RotationGuide`),
        whose term the model adds to its objective, or None.

    Returns each micro-batch's :class:`LossTerms` and, when one's loss was not finite (its
    backward is skipped), ``(its slice, its terms)`` of the first such, else None.
    """
    parts, bad = [], None
    for k, part in enumerate(chunks):
        sync = step_model.no_sync() if ddp and k < len(chunks) - 1 else nullcontext()
        with sync:
            # a model is asked for the guide's term only when there is one (a model without
            # rotation_guidance need not take the keyword)
            guided = {} if guide is None else {"rotation_guide": guide.part(part)}
            terms = step_model(y[part], None if ctf is None else ctf[part], sample=True, generator=generator,
                               rotate_encoder=rotate_encoder, zero_z=zero_z, **guided)
            loss = -terms.objective(free_nats).sum() * scale
            if bool(torch.isfinite(loss)):
                loss.backward()
            elif bad is None:
                bad = (part, terms)
        parts.append(terms)
    return parts, bad


def free_nats(model: PoseVAE, cfg: TrainConfig) -> float:
    """The free bits of z of a training step, nats: ``cfg.free_nats`` (or the model's default)
    per z dimension."""
    per_dim = type(model).free_nats_default if cfg.free_nats is None else cfg.free_nats
    return float(per_dim) * model.zdim


def run_epoch(model: PoseVAE, dataset: ParticleDataset, sampler: SeededSampler, cfg: TrainConfig,
              device: torch.device, epoch: int, optimizer=None, progress: bool = False, *,
              world: World = SINGLE, forward: torch.nn.Module | None = None, workers: int = 0,
              zero_z: bool = False, guide: RotationGuide | None = None) -> dict:
    """One pass over the particles ``sampler`` draws (in its order for ``epoch``); trains when
    ``optimizer`` is given. Returns the mean of each term over the particles (of every process).

    world, forward : the processes of a distributed run and the DistributedDataParallel wrapper
        of ``model`` that trains (its gradients are averaged over the processes; each process's
        loss is scaled so that the step is the one of a single process with the whole step's
        particles). Validation runs ``model`` itself on each process's part.
    workers : DataLoader reader processes (:func:`cryovae.data.batch_loader`).
    zero_z : feed the generator z = 0 (an epoch of the z-delay; validated as trained).
    guide : (training only) the rotation guide of every particle of ``dataset``, indexed as it
        (:func:`cryovae.workflows.train.rotation_guide`); each step's particles add its term to their objective.
    """
    train = optimizer is not None
    model.train(train)
    step_model = forward if (train and forward is not None) else model
    stream = 0 if train else 1
    sampler.set_epoch(epoch if train else 0)
    g_dev = epoch_generator(cfg.seed, epoch if train else 0, stream + 2 + RANK_STREAMS * world.rank, device)
    sums: dict[str, float] = {}
    n_seen = 0
    batches, step_sizes = epoch_batches(sampler, cfg.batch_size, world, train)
    loader = batch_loader(dataset, batches, workers=workers, pin_memory=device.type == "cuda")
    bar = tqdm(loader, desc=f"epoch {epoch + 1} {'train' if train else 'val'}", leave=False,
               disable=not (progress and world.is_main), total=len(batches))
    for batch, (images, ctf_params, b_idx) in enumerate(bar):
        y = images.to(device, non_blocking=True)
        ctf = _batch_ctf(ctf_params, model.cfg, device)
        step_guide = None
        if train and guide is not None:
            rows = torch.as_tensor(np.asarray(b_idx), dtype=torch.int64)
            step_guide = RotationGuide(guide.theta[rows].to(device), guide.std[rows].to(device), guide.weight)
        # the step's mean loss over its particles (of every process)
        scale = world.size / step_sizes[batch] if world.distributed else 1.0 / len(b_idx)
        with torch.set_grad_enabled(train), _autocast(device, cfg.amp):
            if train:
                optimizer.zero_grad(set_to_none=True)
                parts, bad = accumulate_gradients(step_model, y, ctf, scale, micro_batches(len(b_idx), device),
                                                  generator=g_dev, zero_z=zero_z, rotate_encoder=cfg.rotate_encoder,
                                                  ddp=forward is not None,
                                                  free_nats=free_nats(model, cfg), guide=step_guide)
            else:
                parts, bad = [step_model(y, ctf, sample=True, generator=g_dev, zero_z=zero_z)], None
        if train:
            if world.any(bad is not None):
                if bad is None:
                    raise NonFiniteError(f"training diverged on another process at epoch {epoch + 1}, batch {batch + 1} "
                                         "(its message says why)")
                part, terms = bad
                raise _diverged(model, y[part], None if ctf is None else ctf[part], terms, b_idx[part], epoch, batch, cfg)
            optimizer.step()
        for terms in parts:
            values = {"elbo": terms.elbo, "recon": terms.recon, "kl": terms.kl, **terms.kl_parts, **terms.penalties}
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + float(v.detach().float().sum())
        n_seen += len(b_idx)
    if world.distributed:
        everyone = world.gather((sums, n_seen))
        n_seen = sum(n for _, n in everyone)
        keys = list(dict.fromkeys(k for s, _ in everyone for k in s))
        sums = {k: sum(s.get(k, 0.0) for s, _ in everyone) for k in keys}
    return {k: v / max(n_seen, 1) for k, v in sums.items()}


@torch.no_grad()
def inferred_poses(model: PoseVAE, dataset: ParticleDataset, indices: np.ndarray, batch_size: int,
                   device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's reading of the particles ``indices``: (n,) rotations (``infer``'s theta,
    radians) and (n,) classes (its ``class`` extra), None for a model without classes; with
    each particle's CTF for a ``--ctf`` model, as the written results are inferred."""
    model.eval()
    theta, classes = [], []
    for start in range(0, len(indices), batch_size):
        images, ctf_params = dataset[indices[start: start + batch_size]]
        enc = model.infer(images.to(device), _batch_ctf(ctf_params, model.cfg, device))
        theta.append(enc.theta.float().cpu().numpy())
        if CLASS_EXTRA in enc.extras:
            classes.append(enc.extras[CLASS_EXTRA].cpu().numpy())
    return (np.concatenate(theta) if theta else np.zeros(0, dtype=np.float32),
            np.concatenate(classes) if classes else None)


def class_change_share(before: np.ndarray | None, after: np.ndarray | None) -> float:
    """Share (0-1) of the particles whose class differs between two readings; 0 without classes."""
    if before is None or after is None or not len(after):
        return 0.0
    return float(np.mean(before != after))


def rotation_change_deg(before: np.ndarray, after: np.ndarray) -> float:
    """Median angle, degrees, between two readings of the same particles' rotations (radians)."""
    return float(np.degrees(np.median(np.abs(np.angle(np.exp(1j * (after - before)))))))


#: particles whose rotations decide when z switches on when there is no validation set
SETTLE_PARTICLES = 512
#: for a model with classes, z also waits until at most this share of those particles changes class
#: in an epoch (else z, switched on first, learns the difference of two classes as one's variation)
SETTLE_CLASS_SHARE = 0.02


def _first_bad(values: torch.Tensor) -> int | None:
    """Row of the first non-finite entry of a (B, ...) tensor, or None."""
    bad = ~torch.isfinite(values.detach().float().reshape(len(values), -1)).all(dim=1)
    return int(torch.nonzero(bad)[0, 0]) if bool(bad.any()) else None


def weights_finite(model: torch.nn.Module) -> bool:
    """Every parameter and buffer of ``model`` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in [*model.parameters(), *model.buffers()]
               if t.is_floating_point())


def _diverged(model, y, ctf, terms, b_idx, epoch: int, batch: int, cfg: TrainConfig) -> NonFiniteError:
    """A one-line NonFiniteError saying what was non-finite in a batch, and what to do."""
    kept = f"{RunDir.CHECKPOINT} keeps the weights after epoch {epoch}"
    row = _first_bad(y)
    if row is not None:
        return NonFiniteError(f"the preprocessed image of particle {int(b_idx[row]) + 1} (1-based, of those trained on) has NaN or "
                              f"infinite pixels; check the input stack ({kept})")
    if ctf is not None and (row := _first_bad(ctf)) is not None:
        return NonFiniteError(f"the CTF of particle {int(b_idx[row]) + 1} (1-based, of those trained on) is not finite; check its "
                              f"{', '.join(CTF_COLUMNS[:-1])} ({kept})")
    parts = {"recon": terms.recon, "kl": terms.kl, **terms.kl_parts, **terms.penalties}
    which = [k for k, v in parts.items() if not bool(torch.isfinite(v.detach()).all())] or ["elbo"]
    state = "the weights became non-finite" if not weights_finite(model) else "the inputs are finite"
    return NonFiniteError(f"training diverged: non-finite loss ({', '.join(which)}) at epoch {epoch + 1}, "
                          f"batch {batch + 1}; {state}; {kept}; start a new run with a lower --lr "
                          f"(this run used {cfg.lr:g})")


def make_optimizer(model: PoseVAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam; the noise model's parameters (``model.noise_parameters()``: the global log sigma)
    learn ``cfg.sigma_lr_scale`` times faster (one scalar that must travel from 0 to the data's
    noise level, several nats, within the first epochs)."""
    noise = {id(p) for p in model.noise_parameters()}
    sigma = [p for p in model.parameters() if id(p) in noise]
    rest = [p for p in model.parameters() if id(p) not in noise]
    return torch.optim.Adam([{"params": rest, "lr": cfg.lr},
                             {"params": sigma, "lr": cfg.lr * cfg.sigma_lr_scale}], lr=cfg.lr)


def fit(model: PoseVAE, dataset: ParticleDataset, cfg: TrainConfig, rundir: str | Path | RunDir,
        device: torch.device, resume: bool = False, progress: bool = True, *, world: World = SINGLE,
        workers: int = 0, guide: RotationGuide | None = None) -> FitResult:
    """Train ``model`` on ``dataset`` and keep its checkpoints in ``rundir``.

    Parameters
    ----------
    model : a freshly built model (:func:`seeded_model`); its weights are replaced by the
        checkpoint's on ``resume``.
    dataset : the preprocessed particles at the model's box (with CTF parameters when
        ``model.cfg.ctf``).
    cfg : the training options.
    rundir : the run directory (exists); receives checkpoint.pt, best.pt, metrics.csv.
    device : torch device (see :func:`cryovae.device.resolve_device`); in a distributed run this
        process's own.
    resume : continue from RUNDIR/checkpoint.pt (with as many processes as it was trained with).
    world : the processes of a ``torchrun`` run (:func:`cryovae.distributed.init_world`): the model
        is wrapped in DistributedDataParallel, each step takes ``cfg.batch_size`` particles per
        process, and only rank 0 writes.
    workers : DataLoader reader processes per training process.
    guide : each particle's rotation from a 2D alignment, (n,) tensors indexed as ``dataset``
        (:func:`cryovae.workflows.train` makes it with :mod:`cryovae.inference.align2d`): its term
        joins the training objective of a model with ``rotation_guidance`` for the first
        ``cfg.guide_epochs`` epochs (None: all); the validation ELBO never holds it.

    Returns
    -------
    :class:`FitResult` with the best-validation model in eval mode.
    """
    cfg.validate()
    model_cfg = model.cfg
    model_cfg.validate()
    run = RunDir.of(rundir)
    if dataset.images.shape[1:] != (model_cfg.box, model_cfg.box):
        raise CryovaeError(f"images must be (n, {model_cfg.box}, {model_cfg.box}), got {tuple(dataset.images.shape)}")
    if model_cfg.ctf and dataset.ctf_params is None:
        raise CryovaeError("--ctf needs per-particle CTF parameters (defocus, voltage, Cs, ...) in the star")
    if model_cfg.ctf:
        check_ctf_finite(dataset.ctf_params.numpy())
    n = len(dataset)
    if n < 2:
        raise CryovaeError(f"need at least 2 particles to train, got {n}")
    if guide is not None and not (len(guide.theta) == len(guide.std) == n):
        raise CryovaeError(f"the rotation guide has {len(guide.theta)} rotations for {n} particles")
    if guide is not None and not type(model).rotation_guidance:
        log.info("%s takes no rotation guide; training without it", model.title)
        guide = None

    model = model.to(device)
    ddp = None
    if world.distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    train_idx, val_idx = split_indices(n, cfg.val_fraction, cfg.seed)
    history: list[dict] = []
    start_epoch, best_elbo, best_epoch, bad_epochs = 0, -float("inf"), -1, 0
    # z is fed from epoch z_on (0-based; None: not yet, the rotations have not settled)
    z_on, settle_theta, settle_classes = cfg.z_delay_epochs, None, None
    ckpt_path, best_path = run.checkpoint, run.best

    def save_checkpoint(epoch: int) -> None:
        if not world.is_main:
            return
        run.save_checkpoint(model_state(model), epoch, {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history,
            "best_elbo": best_elbo, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "split": {"train": torch.as_tensor(train_idx, dtype=torch.int64),
                      "val": torch.as_tensor(val_idx, dtype=torch.int64)},
            "rng": {"torch": torch.get_rng_state()}, "world_size": world.size,
            "z_on_epoch": z_on, "settle_theta": None if settle_theta is None else torch.as_tensor(settle_theta),
            "settle_classes": None if settle_classes is None else torch.as_tensor(settle_classes),
        })

    if resume:
        if not ckpt_path.exists():
            raise CryovaeError(f"{ckpt_path}: no checkpoint to resume from")
        ck = run.load_checkpoint("last", device, keys=RESUME_KEYS)
        _check_world(ck, world, cfg, ckpt_path)
        load_model_state(model, ck["model"], ckpt_path)
        try:
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            train_idx, val_idx = _indices(ck["split"]["train"]), _indices(ck["split"]["val"])
            history = [dict(r) for r in ck["history"]]
            start_epoch, best_elbo = int(ck["epoch"]), float(ck["best_elbo"])
            best_epoch, bad_epochs = int(ck["best_epoch"]), int(ck["bad_epochs"])
            z_on = ck.get("z_on_epoch", cfg.z_delay_epochs)
            z_on = None if z_on is None else int(z_on)
            if ck.get("settle_theta") is not None:
                settle_theta = ck["settle_theta"].cpu().numpy()
            if ck.get("settle_classes") is not None:
                settle_classes = ck["settle_classes"].cpu().numpy()
            torch.set_rng_state(ck["rng"]["torch"].cpu())
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise DamagedFileError(f"{ckpt_path}: damaged checkpoint ({type(exc).__name__} in its optimizer, "
                                   "split, history or RNG state)") from None
        top = max([int(train_idx.max(initial=-1)), int(val_idx.max(initial=-1))])
        if top >= n or min(int(train_idx.min(initial=0)), int(val_idx.min(initial=0))) < 0:
            raise CryovaeError(f"{ckpt_path}: its train/val split indexes particle {top} but there are {n} "
                               "particles; the checkpoint was made from other particles")
        if not weights_finite(model):
            raise NonFiniteError(f"{ckpt_path}: holds non-finite weights; start a new run with a lower --lr")
        if world.is_main:
            run.write_metrics(history)  # the checkpoint is the source of truth
        log.info("resumed from %s after epoch %d", ckpt_path, start_epoch)
    else:
        save_checkpoint(0)  # resumable from the first second on

    settle_idx = val_idx if len(val_idx) else train_idx[:SETTLE_PARTICLES]
    train_sampler = SeededSampler(train_idx, cfg.seed, shuffle=True)
    val_sampler = SeededSampler(val_idx, cfg.seed, shuffle=False)
    stopped = False
    bar = tqdm(range(start_epoch, cfg.epochs), desc="training", unit="epoch", initial=start_epoch,
               total=cfg.epochs, disable=not (progress and world.is_main))
    for epoch in bar:
        if cfg.early_stop_patience and bad_epochs >= cfg.early_stop_patience:
            stopped = True
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        zero_z = z_on is None or epoch < z_on
        guided = guide if cfg.guide_epochs is None or epoch < cfg.guide_epochs else None
        tr = run_epoch(model, dataset, train_sampler, cfg, device, epoch, optimizer, progress, world=world,
                       forward=ddp, workers=workers, zero_z=zero_z, guide=guided)
        rows = [{"epoch": epoch + 1, "split": "train", **tr, "lr": lr}]
        if len(val_idx):
            va = run_epoch(model, dataset, val_sampler, cfg, device, epoch, None, False, world=world,
                           workers=workers, zero_z=zero_z)
            rows.append({"epoch": epoch + 1, "split": "val", **va, "lr": lr})
        if z_on is None:  # the z-delay lasts until the rotations (and classes) have settled
            theta, classes = inferred_poses(model, dataset, settle_idx, cfg.batch_size, device)
            change = float("nan") if settle_theta is None else rotation_change_deg(settle_theta, theta)
            moved = 1.0 if settle_theta is None else class_change_share(settle_classes, classes)
            settle_theta, settle_classes = theta, classes
            for r in rows:
                r["rotation_change_deg"] = change
                if classes is not None:
                    r["class_change"] = moved
            settled = change <= cfg.settle_deg and moved <= SETTLE_CLASS_SHARE
            if (epoch + 1 >= 2 and settled) or epoch + 1 >= cfg.z_delay_max:
                z_on, settle_theta, settle_classes = epoch + 1, None, None
                log.info("z on from epoch %d: the rotations moved by a median of %.2f degrees%s in epoch %d%s",
                         z_on + 1, change, "" if classes is None else f" and {moved:.1%} of the particles changed class",
                         epoch + 1, "" if settled else f" (the longest z-delay, {cfg.z_delay_max} epochs)")
        monitor = rows[-1]["elbo"]
        if not (math.isfinite(monitor) and weights_finite(model)):
            what = "the weights" if not weights_finite(model) else f"the {rows[-1]['split']} ELBO"
            raise NonFiniteError(f"training diverged: {what} became non-finite in epoch {epoch + 1}; "
                                 f"{RunDir.CHECKPOINT} keeps the weights after epoch {epoch}; start a new run with a "
                                 f"lower --lr (this run used {cfg.lr:g})")
        seconds = time.perf_counter() - t0
        for r in rows:
            r["seconds"] = seconds
        history.extend(rows)
        # While z is held at 0 the model is a different (z-free) one: the LR schedule, early
        # stopping and best.pt start watching the ELBO once z is on, so a run can neither slow
        # down before z learns nor end with a best.pt that has no z.
        if not zero_z:
            scheduler.step(monitor)
            if monitor > best_elbo:
                best_elbo, best_epoch, bad_epochs = monitor, epoch + 1, 0
                if world.is_main:
                    run.save_best(model_state(model), epoch + 1, monitor)
            else:
                bad_epochs += 1
        save_checkpoint(epoch + 1)
        if world.is_main:
            run.write_metrics(history)
        bar.set_postfix(elbo=f"{tr['elbo']:.1f}", recon=f"{tr['recon']:.1f}", kl=f"{tr['kl']:.2f}",
                        val=f"{monitor:.1f}")
        log.info("epoch %d: train elbo %.2f recon %.2f kl %.3f | %s elbo %.2f | lr %.2e | %.1f s",
                 epoch + 1, tr["elbo"], tr["recon"], tr["kl"], rows[-1]["split"], monitor, lr, seconds)
    if cfg.early_stop_patience and bad_epochs >= cfg.early_stop_patience:
        stopped = True
    if not best_path.exists() and history and world.is_main:  # every epoch ran inside the z-delay
        run.save_best(model_state(model), int(history[-1]["epoch"]), history[-1]["elbo"])
    world.barrier()  # rank 0 has written best.pt
    if best_epoch < 0 and history:
        best_epoch = int(history[-1]["epoch"])
    if best_path.exists():
        load_model_state(model, run.load_checkpoint("best", device)["model"], best_path)
    model.eval()
    return FitResult(model=model, history=history, best_epoch=best_epoch, stopped_early=stopped)


def _check_world(ck: dict, world: World, cfg: TrainConfig, path: Path) -> None:
    """A one-line error when a run is resumed with another number of processes than it was
    trained with: each step's particles (processes x --batch-size) and their order would change."""
    trained = int(ck.get("world_size", 1))
    if trained != world.size:
        how = ("one process (plain cryovae train --resume)" if trained == 1 else
               f"{trained} processes (torchrun --nproc_per_node {trained} -m cryovae train --resume ...)")
        raise CryovaeError(f"{path}: this run was trained by {trained} process(es) ({trained} x {cfg.batch_size} "
                           f"particles per step) and is now resumed by {world.size}; resume it with {how}")


def fit_images(images: np.ndarray | torch.Tensor, model_cfg: ModelConfig, cfg: TrainConfig,
               rundir: str | Path | RunDir, device: torch.device, ctf_params: np.ndarray | None = None,
               resume: bool = False, progress: bool = True) -> FitResult:
    """:func:`fit` of a fresh ``model_cfg`` model (weights from ``cfg.seed``) on an array of
    preprocessed images (n, box, box), with their (n, 7) CTF parameters when ``model_cfg.ctf``."""
    return fit(seeded_model(model_cfg, cfg.seed), ParticleDataset(images, ctf_params), cfg, rundir, device,
               resume=resume, progress=progress)
