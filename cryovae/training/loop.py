"""The training loop: split, Adam, plateau LR schedule, early stopping, atomic checkpoints.

Everything random is a deterministic function of ``(seed, epoch)`` (initial weights from
``seed``; each epoch's data order and samples from their own generators), so a run resumed from
the checkpoint after epoch k gives the same weights as an uninterrupted run.

checkpoint.pt is the source of truth: it is written before training starts (epoch 0) and after
every epoch, holds the whole metrics history (metrics.csv is rewritten from it on resume), and
is never overwritten with non-finite weights.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cryovae.errors import CryovaeError, DamagedFileError, NonFiniteError
from cryovae.io.atomic import atomic_path
from cryovae.models import ModelConfig, build_model, compute_ctf
from cryovae.models.ctf import CTF_COLUMNS
from cryovae.training.checkpoint import load_checkpoint, load_model_state, model_state, save_atomic
from cryovae.training.config import TrainConfig
from cryovae.training.losses import elbo_terms

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
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
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0]))
    return g


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _batch_ctf(ctf_params, idx, model_cfg: ModelConfig, device):
    if ctf_params is None or not model_cfg.ctf:
        return None
    return compute_ctf(ctf_params[idx].to(device), model_cfg.box, model_cfg.pixel_size)


def run_epoch(model, images: torch.Tensor, idx: np.ndarray, cfg: TrainConfig, model_cfg: ModelConfig,
              device: torch.device, epoch: int, optimizer=None, ctf_params=None, progress: bool = False
              ) -> dict:
    """One pass over ``images[idx]``; trains when ``optimizer`` is given. Returns mean terms."""
    train = optimizer is not None
    model.train(train)
    stream = 0 if train else 1
    g_cpu = epoch_generator(cfg.seed, epoch if train else 0, stream, torch.device("cpu"))
    g_dev = epoch_generator(cfg.seed, epoch if train else 0, stream + 2, device)
    order = idx[torch.randperm(len(idx), generator=g_cpu).numpy()] if train else idx
    sums: dict[str, float] = {}
    n_seen = 0
    zero_z = epoch < cfg.z_delay_epochs  # validated as trained: a z-delay epoch's model has no z
    batches = range(0, len(order), cfg.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch + 1} {'train' if train else 'val'}", leave=False,
               disable=not progress)
    for batch, start in enumerate(bar):
        b_idx = order[start: start + cfg.batch_size]
        y = images[b_idx].to(device, non_blocking=True)
        ctf = _batch_ctf(ctf_params, b_idx, model_cfg, device)
        with torch.set_grad_enabled(train), _autocast(device, cfg.amp):
            terms = elbo_terms(model, y, ctf, sample=True, generator=g_dev,
                               rotate_encoder=train and cfg.rotate_encoder, zero_z=zero_z)
        if train:
            loss = -terms.elbo.mean()
            if not torch.isfinite(loss):
                raise _diverged(model, y, ctf, terms, b_idx, epoch, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        values = {"elbo": terms.elbo, "recon": terms.recon, "kl": terms.kl, **terms.kl_parts}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach().float().sum())
        n_seen += len(b_idx)
    return {k: v / max(n_seen, 1) for k, v in sums.items()}


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
    kept = f"{CHECKPOINT} keeps the weights after epoch {epoch}"
    row = _first_bad(y)
    if row is not None:
        return NonFiniteError(f"the preprocessed image of particle {int(b_idx[row]) + 1} (1-based, of those trained on) has NaN or "
                              f"infinite pixels; check the input stack ({kept})")
    if ctf is not None and (row := _first_bad(ctf)) is not None:
        return NonFiniteError(f"the CTF of particle {int(b_idx[row]) + 1} (1-based, of those trained on) is not finite; check its "
                              f"{', '.join(CTF_COLUMNS[:-1])} ({kept})")
    parts = {"recon": terms.recon, "kl": terms.kl, **terms.kl_parts}
    which = [k for k, v in parts.items() if not bool(torch.isfinite(v.detach()).all())] or ["elbo"]
    state = "the weights became non-finite" if not weights_finite(model) else "the inputs are finite"
    return NonFiniteError(f"training diverged: non-finite loss ({', '.join(which)}) at epoch {epoch + 1}, "
                          f"batch {batch + 1}; {state}; {kept}; start a new run with a lower --lr "
                          f"(this run used {cfg.lr:g})")


def check_ctf_finite(ctf_params: np.ndarray, source: str = "ctf_params", rows: np.ndarray | None = None) -> None:
    """NonFiniteError naming the column and the first particle (1-based row of ``source``) of a
    NaN/inf CTF value.

    ``ctf_params`` is (n, 7) in the order of :data:`cryovae.models.ctf.CTF_COLUMNS`; ``rows``
    (n,) the 0-based rows of the particles in the file (default ``arange(n)``).
    """
    params = np.asarray(ctf_params, dtype=np.float64)
    bad = ~np.isfinite(params)
    if bad.any():
        k, col = (int(v[0]) for v in np.nonzero(bad))  # first bad particle (row-major order)
        row = int(rows[k]) if rows is not None else k
        count = int(bad.any(axis=1).sum())
        raise NonFiniteError(f"{source}: _{CTF_COLUMNS[col]} is {params[k, col]} for particle {row + 1} "
                             f"(row {row + 1} of the particle table; {count} particle(s) with a non-finite "
                             "CTF value in all); --ctf needs a finite CTF for every particle")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam; the global noise log sigma learns ``cfg.sigma_lr_scale`` times faster (one scalar that
    must travel from 0 to the data's noise level, several nats, within the first epochs)."""
    sigma = [p for n, p in model.named_parameters() if n == "log_sigma"]
    rest = [p for n, p in model.named_parameters() if n != "log_sigma"]
    return torch.optim.Adam([{"params": rest, "lr": cfg.lr},
                             {"params": sigma, "lr": cfg.lr * cfg.sigma_lr_scale}], lr=cfg.lr)


def write_metrics(history: list[dict], path: Path) -> None:
    """metrics.csv: one row per (epoch, split), written atomically."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def fit(images: np.ndarray | torch.Tensor, model_cfg: ModelConfig, cfg: TrainConfig, rundir: Path,
        device: torch.device, ctf_params: np.ndarray | None = None, resume: bool = False,
        progress: bool = True) -> FitResult:
    """Train a model on preprocessed images and keep checkpoints in ``rundir``.

    Parameters
    ----------
    images : (n, box, box) float32 preprocessed particles at the model's box.
    model_cfg, cfg : model and training configuration.
    rundir : run directory (exists); receives checkpoint.pt, best.pt, metrics.csv.
    device : torch device (see :func:`cryovae.training.device.resolve_device`).
    ctf_params : (n, 7) CTF parameters (:func:`cryovae.models.ctf_parameters`), needed when
        ``model_cfg.ctf``.
    resume : continue from rundir/checkpoint.pt.

    Returns
    -------
    :class:`FitResult` with the best-validation model in eval mode.
    """
    cfg.validate()
    model_cfg.validate()
    rundir = Path(rundir)
    images_t = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if images_t.ndim != 3 or images_t.shape[1:] != (model_cfg.box, model_cfg.box):
        raise CryovaeError(f"images must be (n, {model_cfg.box}, {model_cfg.box}), got {tuple(images_t.shape)}")
    if model_cfg.ctf and ctf_params is None:
        raise CryovaeError("--ctf needs per-particle CTF parameters (defocus, voltage, Cs, ...) in the star")
    if model_cfg.ctf:
        check_ctf_finite(ctf_params)
    ctf_t = torch.as_tensor(np.asarray(ctf_params, dtype=np.float32)) if ctf_params is not None else None
    n = images_t.shape[0]
    if n < 2:
        raise CryovaeError(f"need at least 2 particles to train, got {n}")

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    train_idx, val_idx = split_indices(n, cfg.val_fraction, cfg.seed)
    history: list[dict] = []
    start_epoch, best_elbo, best_epoch, bad_epochs = 0, -float("inf"), -1, 0
    ckpt_path, best_path = rundir / CHECKPOINT, rundir / BEST

    def save_checkpoint(epoch: int) -> None:
        save_atomic({
            "model": model_state(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
            "best_elbo": best_elbo, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "split": {"train": torch.as_tensor(train_idx, dtype=torch.int64),
                      "val": torch.as_tensor(val_idx, dtype=torch.int64)},
            "rng": {"torch": torch.get_rng_state()},
        }, ckpt_path)

    if resume:
        if not ckpt_path.exists():
            raise CryovaeError(f"{ckpt_path}: no checkpoint to resume from")
        ck = load_checkpoint(ckpt_path, device, keys=RESUME_KEYS)
        load_model_state(model, ck["model"], ckpt_path)
        try:
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            train_idx, val_idx = _indices(ck["split"]["train"]), _indices(ck["split"]["val"])
            history = [dict(r) for r in ck["history"]]
            start_epoch, best_elbo = int(ck["epoch"]), float(ck["best_elbo"])
            best_epoch, bad_epochs = int(ck["best_epoch"]), int(ck["bad_epochs"])
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
        if history:
            write_metrics(history, rundir / METRICS)  # the checkpoint is the source of truth
        else:
            (rundir / METRICS).unlink(missing_ok=True)
        log.info("resumed from %s after epoch %d", ckpt_path, start_epoch)
    else:
        save_checkpoint(0)  # resumable from the first second on

    stopped = False
    bar = tqdm(range(start_epoch, cfg.epochs), desc="training", unit="epoch", initial=start_epoch,
               total=cfg.epochs, disable=not progress)
    for epoch in bar:
        if cfg.early_stop_patience and bad_epochs >= cfg.early_stop_patience:
            stopped = True
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        tr = run_epoch(model, images_t, train_idx, cfg, model_cfg, device, epoch, optimizer, ctf_t, progress)
        rows = [{"epoch": epoch + 1, "split": "train", **tr, "lr": lr}]
        if len(val_idx):
            va = run_epoch(model, images_t, val_idx, cfg, model_cfg, device, epoch, None, ctf_t, False)
            rows.append({"epoch": epoch + 1, "split": "val", **va, "lr": lr})
        monitor = rows[-1]["elbo"]
        if not (math.isfinite(monitor) and weights_finite(model)):
            what = "the weights" if not weights_finite(model) else f"the {rows[-1]['split']} ELBO"
            raise NonFiniteError(f"training diverged: {what} became non-finite in epoch {epoch + 1}; "
                                 f"{CHECKPOINT} keeps the weights after epoch {epoch}; start a new run with a "
                                 f"lower --lr (this run used {cfg.lr:g})")
        seconds = time.perf_counter() - t0
        for r in rows:
            r["seconds"] = seconds
        history.extend(rows)
        # While z is held at 0 the model is a different (z-free) one: the LR schedule, early
        # stopping and best.pt start watching the ELBO once z is on, so a run can neither slow
        # down before z learns nor end with a best.pt that has no z.
        if epoch >= cfg.z_delay_epochs:
            scheduler.step(monitor)
            if monitor > best_elbo:
                best_elbo, best_epoch, bad_epochs = monitor, epoch + 1, 0
                save_atomic({"model": model_state(model), "epoch": epoch + 1, "elbo": monitor}, best_path)
            else:
                bad_epochs += 1
        save_checkpoint(epoch + 1)
        write_metrics(history, rundir / METRICS)
        bar.set_postfix(elbo=f"{tr['elbo']:.1f}", recon=f"{tr['recon']:.1f}", kl=f"{tr['kl']:.2f}",
                        val=f"{monitor:.1f}")
        log.info("epoch %d: train elbo %.2f recon %.2f kl %.3f | %s elbo %.2f | lr %.2e | %.1f s",
                 epoch + 1, tr["elbo"], tr["recon"], tr["kl"], rows[-1]["split"], monitor, lr, seconds)
    if cfg.early_stop_patience and bad_epochs >= cfg.early_stop_patience:
        stopped = True
    if best_path.exists():
        load_model_state(model, load_checkpoint(best_path, device)["model"], best_path)
    elif history:  # every epoch ran inside the z-delay: the last weights are the result
        best_epoch = int(history[-1]["epoch"])
        save_atomic({"model": model_state(model), "epoch": best_epoch, "elbo": history[-1]["elbo"]}, best_path)
    model.eval()
    return FitResult(model=model, history=history, best_epoch=best_epoch, stopped_early=stopped)
