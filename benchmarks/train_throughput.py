"""Training, encoding and refinement throughput (particles/s), peak memory and achieved GFLOP/s.

"refine p/s" is particles per second through the default 20 steps of the per-particle pose and z
refinement that follows encoding in ``cryovae train`` and ``cryovae encode``.

Each configuration runs in its own subprocess so that its peak resident memory (CPU) or peak
allocated memory (CUDA) is its own. Timings are medians over ``--steps`` steps after one warm-up
step, on random images (throughput does not depend on the content).

Usage::

    python benchmarks/train_throughput.py                      # both models, 40 and 64 px, defaults
    python benchmarks/train_throughput.py --paper              # + paper-size TARGET-VAE (P8, 40 px)
    python benchmarks/train_throughput.py --device cuda --batch-size 128
    python benchmarks/train_throughput.py --models target --sizes 40 --batch-size 64 --before --profile
                                                               # before / after issue #13, and where the time goes
    python benchmarks/train_throughput.py --models target --sizes 40 --batch-size 64 --guide --steps 9
                                                               # + the step with the 2D alignment's rotation guide

FLOPs are counted with ``torch.utils.flop_counter`` on the same step with the lifting convolution
done directly (FFT-free), i.e. the arithmetic the original code performs; "achieved GFLOP/s" is
that count divided by the measured step time (with the FFT lifting the step does less arithmetic,
so this is an "equivalent" rate).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _one(spec: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cryovae.models import build_model, model_config, paper_config
    from cryovae.runs import TrainConfig
    from cryovae.training.loop import make_optimizer

    torch.set_num_threads(spec["threads"]) if spec["threads"] else None
    device = torch.device(spec["device"])
    from cryovae.training.loop import accumulate_gradients, micro_batches

    make = paper_config if spec["paper"] else model_config
    group = {"group": "p8"} if spec["kind"] == "target" else {}
    before = spec.get("variant") == "before"
    overrides = dict(BEFORE if before else AFTER) if not spec["paper"] else {}
    cfg = make(spec["kind"], box=spec["box"], zdim=1, **group, **overrides)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    if before and hasattr(model, "encoder") and hasattr(model.encoder, "window_bounds"):
        _lift_by_fft_then_crop(model.encoder)
    opt = make_optimizer(model, TrainConfig())
    b = spec["batch"]
    y = torch.randn(b, cfg.box, cfg.box, device=device)
    chunks = [slice(None)] if before else micro_batches(b, device)
    g = torch.Generator(device=device).manual_seed(0)
    guide = None
    if spec.get("variant") == "guided":  # what train adds with --align-rotations (the default)
        from cryovae.models import RotationGuide

        guide = RotationGuide(torch.rand(b, device=device) * 6.28 - 3.14, torch.full((b,), 0.05, device=device),
                              TrainConfig().guide_weight)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():  # the trainer's step (micro-batches on a CPU)
        with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null():
            opt.zero_grad()
            accumulate_gradients(model, y, None, 1.0 / b, chunks, generator=g, zero_z=False, rotate_encoder=False,
                                 guide=guide)
        opt.step()

    model.train()
    step()
    sync()
    times = []
    for _ in range(spec["steps"]):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    model.eval()
    enc_times = []
    with torch.no_grad():
        model.infer(y)
        for _ in range(spec["steps"]):
            t = time.perf_counter()
            model.infer(y)
            sync()
            enc_times.append(time.perf_counter() - t)
    from cryovae.inference.refine import RefineConfig, refine_batch

    refine_cfg = RefineConfig()  # the default steps of `cryovae train` / `cryovae encode`
    enc = model.infer(y)
    ref_times = []
    for _ in range(spec["steps"]):
        t = time.perf_counter()
        refine_batch(model, y, enc.z_mean, enc.theta, enc.center_px, refine_cfg)
        sync()
        ref_times.append(time.perf_counter() - t)
    flops = None
    if spec["flops"]:
        model.train()
        if hasattr(model, "encoder") and hasattr(model.encoder, "fft_lift"):
            model.encoder.fft_lift = False
            model.encoder.__dict__.pop("lift_forward", None)  # the before variant's FFTs: counted as direct
        with FlopCounterMode(display=False) as counter:
            loss = -model(y).elbo.mean()
            loss.backward()
        flops = counter.get_total_flops()
    t_step = statistics.median(times)
    out = {**{k: spec[k] for k in ("kind", "box", "paper", "device")},
           "batch": b, "train_particles_per_s": b / t_step, "encode_particles_per_s": b / statistics.median(enc_times),
           "refine_particles_per_s": b / statistics.median(ref_times), "refine_steps": refine_cfg.steps,
           "step_s": t_step}
    if device.type == "cuda":
        out["peak_mem_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_mem_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if flops:
        out["gflop_per_step"] = flops / 1e9
        out["achieved_gflops"] = flops / 1e9 / t_step
    return out


#: the model options of the "before" variant: the defaults of cryovae before issue #13 (a 4-px
#: centre prior, so a 25 x 25 translation window at 40 px, and the likelihood over the whole box);
#: that variant also steps the whole batch at once and lifts by FFTs of the whole image, cropped
BEFORE = {"translation_prior_px": 4.0, "likelihood_mask": 0.0}
#: the "after" variant's: the default centre prior (box/20), and the mask radius that train
#: measured on the 40-px hinge and two-arm sets (0.80-0.85 of the box half-width)
AFTER = {"likelihood_mask": 0.8}


def _lift_by_fft_then_crop(encoder) -> None:
    """The lifting as cryovae computed it before: FFTs of the whole image, then the window."""
    from cryovae.models.target_encoder import fft_conv2d_same

    def lift_forward(images, window=False):
        weight, bias = encoder.lift_filter()
        out = fft_conv2d_same(images[:, None], weight, bias)
        bounds = encoder.window_bounds(images.shape[-2], images.shape[-1]) if window else None
        if bounds is None:
            return out
        r0, r1, c0, c1 = bounds
        return out[..., r0:r1, c0:c1]

    encoder.lift_forward = lift_forward


def _phases(spec: dict) -> dict:
    """Seconds per training step spent in each part of the default TARGET-VAE (forward and
    backward of each alone, medians): the lifting convolution, the rest of the encoder, the
    generator with the likelihood, the KL terms, and the optimiser step."""
    import torch

    from cryovae.models import build_model, model_config
    from cryovae.runs import TrainConfig
    from cryovae.training.loop import make_optimizer

    torch.set_num_threads(spec["threads"]) if spec["threads"] else None
    cfg = model_config("target", box=spec["box"], zdim=1, group="p8", **AFTER)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = make_optimizer(model, TrainConfig())
    b = min(spec["batch"], 32)
    y = torch.randn(b, cfg.box, cfg.box)
    enc = model.encoder
    theta, c, z = torch.rand(b) * 6, torch.randn(b, 2), torch.randn(b, 1)

    def lift():
        enc.lift_forward(y, window=True).square().mean().backward()

    def encoder():
        post = enc(y)
        (post.logits.square().mean() + post.z_mu.square().mean()).backward()

    def generator():
        (-model.log_likelihood(y, z, theta, c).mean()).backward()

    def kl():
        with torch.no_grad():
            post = enc(y)
        post = type(post)(*(t.detach().requires_grad_() for t in vars(post).values()))
        sum(v.mean() for v in model.kl_terms(post).values()).backward()

    def optimiser():
        opt.step()

    out = {}
    for name, fn in (("lifting convolution", lift), ("whole encoder (lifting included)", encoder),
                     ("generator + likelihood", generator), ("KL terms", kl), ("optimiser step", optimiser)):
        fn()
        times = []
        for _ in range(spec["steps"]):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times) / b * spec["batch"]
    return out


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default="40,64")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--paper", action="store_true", help="also the paper-size TARGET-VAE at 40 px")
    ap.add_argument("--models", default="target,spatial")
    ap.add_argument("--before", action="store_true",
                    help="also the TARGET-VAE of cryovae before issue #13 beside today's (see BEFORE)")
    ap.add_argument("--profile", action="store_true",
                    help="where a default TARGET-VAE training step's time goes, per part")
    ap.add_argument("--guide", action="store_true",
                    help="also TARGET-VAE's step with the rotation guide of the 2D alignment (train's default)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--one-phases", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return
    if args.one_phases:
        print(json.dumps(_phases(json.loads(args.one_phases))))
        return
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    specs = [dict(kind=k, box=int(s), paper=False) for k in args.models.split(",") for s in args.sizes.split(",")]
    if args.before:
        specs = [dict(spec, variant=v) for spec in specs for v in ("before", "after") if spec["kind"] == "target" or v == "after"]
    if args.guide:  # after each TARGET-VAE spec of today's defaults, the same with the guide
        def with_guided(spec: dict) -> list[dict]:
            today = spec["kind"] == "target" and spec.get("variant", "after") == "after"
            return [spec, dict(spec, variant="guided")] if today else [spec]

        specs = [s for spec in specs for s in with_guided(spec)]
    if args.paper:
        specs.append(dict(kind="target", box=40, paper=True))
    header = f"{'model':>8} {'box':>4} {'size':>7} {'train p/s':>10} {'encode p/s':>11} {'refine p/s':>11} {'peak MiB':>9} {'GFLOP/step':>11} {'GFLOP/s':>8}"
    print(f"device={device} batch={args.batch_size} steps={args.steps} (medians)")
    print(header)
    for spec in specs:
        spec.update(device=device, batch=args.batch_size, steps=args.steps, threads=args.threads, flops=True)
        res = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{spec['kind']:>8} {spec['box']:>4} failed: {res.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        size = "paper" if r["paper"] else spec.get("variant", "default")
        print(f"{r['kind']:>8} {r['box']:>4} {size:>7} "
              f"{r['train_particles_per_s']:>10.1f} {r['encode_particles_per_s']:>11.1f} "
              f"{r['refine_particles_per_s']:>11.1f} {r['peak_mem_MiB']:>9.0f} "
              f"{r.get('gflop_per_step', float('nan')):>11.2f} {r.get('achieved_gflops', float('nan')):>8.1f}")


    if args.profile:
        spec = dict(box=40, batch=args.batch_size, steps=args.steps, threads=args.threads)
        res = subprocess.run([sys.executable, __file__, "--one-phases", json.dumps(spec)], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"profile failed: {res.stderr.strip().splitlines()[-1]}")
            return
        phases = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"\nTARGET-VAE P8 40 px, seconds per {args.batch_size}-particle step (forward + backward of each part alone):")
        for name, sec in phases.items():
            print(f"  {name:<34} {sec:7.3f}")


if __name__ == "__main__":
    main()
