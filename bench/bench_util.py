"""Timing and peak-memory helpers shared by bench/*.py, for CPU and CUDA (bench code, not part of
the package).

Timing: ``time_interleaved`` runs every variant once as warm-up, then ``reps`` rounds of (variant 1,
variant 2, ...), so background load and clock changes hit all variants alike; the tables report
median (and min). On CPU a call is timed with ``time.perf_counter`` (or ``time.process_time`` with
``SEGALIAS_BENCH_CLOCK=process``, for a shared machine); on CUDA with a pair of CUDA events recorded
around the call on the current stream and ``torch.cuda.synchronize()`` after it (the host waits for
the queued kernels; the events bracket exactly the GPU work of the call).

Peak memory:

* CUDA: ``torch.cuda.reset_peak_memory_stats()`` before the call,
  ``torch.cuda.max_memory_allocated()`` after it, minus the memory allocated before the call: the
  peak of tensor memory the call needed on top of what already existed (model, inputs).
  Caching-allocator reserve and cuFFT plan workspaces are not included.
* CPU: PyTorch has no CPU allocator statistics and ``tracemalloc`` does not see tensor memory (it is
  malloc'd by c10, not by Python). ``cpu_peak_in_child`` therefore runs the call in a FRESH
  subprocess per configuration, with ``MALLOC_MMAP_THRESHOLD_=65536`` so glibc serves every block
  >= 64 KiB by mmap and returns it to the kernel on free (otherwise freed heap memory stays resident
  and hides later peaks, or a previous configuration's peak hides this one). The child builds its
  inputs, runs the call once (warm-up: masks, FFT descriptors, oneDNN primitives), resets the
  kernel's peak-RSS mark (``/proc/self/clear_refs``, "5"), reads VmRSS, runs the call again and
  reads VmHWM: ``peak - before`` is the physical memory the call touched at its peak, including
  library scratch (oneDNN, MKL) and allocator slack. As a cross-check ``profiler_tensor_peak``
  replays the c10 allocation events recorded by ``torch.profiler`` (profile_memory) in time order:
  the peak of live tensor bytes, without library scratch; allocations freed inside one op are netted
  out, so it is a lower bound.
"""

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import torch

MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available in this torch build / machine")
    return dev


#: CPU timing clock: "wall" (default, time.perf_counter) or "process" (time.process_time: CPU
#: seconds of all threads of this process; far less inflated than wall time when other jobs share
#: the cores, but it counts OpenMP spin-waiting and is no wall time). Set with the environment
#: variable SEGALIAS_BENCH_CLOCK.
CPU_CLOCK = os.environ.get("SEGALIAS_BENCH_CLOCK", "wall")
if CPU_CLOCK not in ("wall", "process"):
    raise SystemExit(f"SEGALIAS_BENCH_CLOCK={CPU_CLOCK!r}: expected 'wall' or 'process'")


def cpu_threads():
    """torch CPU threads of a bench run: 2 (the CI machine's cores) unless SEGALIAS_BENCH_THREADS
    says otherwise."""
    return int(os.environ.get("SEGALIAS_BENCH_THREADS", "2"))


def describe(device):
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    clock = "process CPU time" if CPU_CLOCK == "process" else "wall clock"
    return f"CPU, {torch.get_num_threads()} threads, {clock}"


def default_amps(device):
    """fp32 everywhere; fp16 and bf16 autocast variants on CUDA (CPU: opt in with --amp)."""
    return ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]


def amp_dtype(amp):
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


def amp_context(device, amp):
    dt = amp_dtype(amp)
    return contextlib.nullcontext() if dt is None else torch.autocast(device.type, dtype=dt)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device):
    """Milliseconds of one call of ``fn`` (CUDA events on GPU, wall clock on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    clock = time.process_time if CPU_CLOCK == "process" else time.perf_counter
    t0 = clock()
    fn()
    return 1000.0 * (clock() - t0)


def time_interleaved(fns, reps, device, warmup=1):
    """{name: [ms, ...]} for a dict of zero-argument callables, interleaved after ``warmup`` calls
    each."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    synchronize(device)
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            times[k].append(time_call(f, device))
    return times


def counting_page_faults(fn, counts):
    """``fn`` wrapped to append the minor page faults of each call to ``counts`` (Linux/Unix; on
    the CPU a fresh buffer's first touch costs one per 4 KiB page, a large part of a step on some
    machines: BENCHMARKS.md, issue 15)."""
    import resource  # noqa: PLC0415  (Unix only: imported where it is used)

    def call():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    return call


def med(ts):
    return statistics.median(ts)


def min_med(ts, fmt="{:.1f}"):
    return f"{fmt.format(min(ts))} / {fmt.format(statistics.median(ts))}"


def cuda_peak_mib(fn, device):
    """Peak extra tensor memory (MiB) of one call on CUDA (see the module docstring)."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_peak_of_call(fn):
    """In a child: (peak - before) RSS in MiB of the second call of ``fn`` (Linux)."""
    fn()  # warm-up: one-time caches belong to the baseline
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024.0


def profiler_tensor_peak(fn):
    """Peak of live CPU tensor bytes (MiB) during one call of ``fn``, from the profiler's allocation
    events."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


def cpu_peak_in_child(script, args):
    """Run ``script --_mem_child ARGS`` in a fresh process with the fixed mmap threshold; returns
    its JSON."""
    env = dict(os.environ, **MMAP_ENV)
    out = subprocess.run(
        [sys.executable, script, "--_mem_child", *args], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")
