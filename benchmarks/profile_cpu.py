"""Where the time of a vmapped sweep goes: `python -m benchmarks.profile_cpu [--k K] [--data_dir D]`.

Splits the `sweep_speedup` workload (BN-paper MLP, batch 60) for 1 and K members into compilation
and one steady chunk of `train.steps_per_call` steps, the chunk into its parts (the epoch
permutations it computes, the optimizer steps on a fixed batch), and times one ResNet-20 step
inside and outside `lax.scan` (XLA:CPU runs convolution gradients inside loops on a slow path,
jax-ml/jax#12868), and one 3x3 conv layer per ResNet-20 stage against PyTorch's with
`--torch_python` (`--only_conv`: that alone). Builds the same programs as `train.Trainer` (mode
"single"). Prints one line per measurement; the numbers in benchmarks/README.md come from it.
"""

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import harness, run
from dlresearch import data, train
from dlresearch import program as program_lib


def _compile_s(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start, compiled


def _run_ms(compiled: Any, *args: Any, repeats: int = 3) -> float:
    """Mean wall time of a compiled function after one warm-up call, in ms."""
    jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = compiled(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1000


def profile_sweep(k: int, data_dir: str) -> None:
    config = harness.bn_mlp_config(data_dir)
    if k > 1:
        config.sweep.seed = tuple(range(k))
    trainer = train.Trainer(config)
    program, chunk = trainer.program, config.train.steps_per_call
    members = trainer.members

    keys, hparams = program_lib.member_inputs(members)
    seconds, _ = _compile_s(functools.partial(program_lib.init_states, program), keys, hparams)
    print(f"K={k}  compile program.init_states:                 {seconds:6.2f} s")

    # The chunk as `Trainer` runs it (on the CPU: groups of members as concurrent calls).
    state = trainer.init_state()
    start = time.perf_counter()
    state, _ = jax.block_until_ready(trainer.train_chunk(state, chunk))
    seconds = time.perf_counter() - start
    print(f"K={k}  compile and run the first chunk of {chunk} steps: {seconds:6.2f} s")
    start, repeats = time.perf_counter(), 3
    for _ in range(repeats):
        state, _ = trainer.train_chunk(state, chunk)
    jax.block_until_ready(state)
    chunk_ms = (time.perf_counter() - start) / repeats * 1000
    print(
        f"K={k}  steady chunk: {chunk_ms:8.1f} ms = {k * chunk / chunk_ms * 1000:6.0f} model-steps/s"
    )

    # The part of the chunk that does not depend on the steps: its epoch permutations.
    epochs = chunk // program.pipeline.steps_per_epoch + 2
    permutations = jax.vmap(
        lambda key: jax.vmap(lambda e: data.epoch_permutation(key, e, program.pipeline.num_train))(
            jnp.arange(epochs)
        )
    )
    _, compiled = _compile_s(permutations, keys)
    print(
        f"K={k}    of which {epochs} epoch permutations of {program.pipeline.num_train}: "
        f"{_run_ms(compiled, keys):8.1f} ms"
    )

    images = program.pipeline.normalize(trainer.dataset.train_images[:60])
    labels = jnp.asarray(trainer.dataset.train_labels[:60])

    def fixed_batch_chunk(state: program_lib.TrainState) -> program_lib.TrainState:
        def body(state: program_lib.TrainState, _: None) -> tuple[program_lib.TrainState, None]:
            step = program.train_step(state, (images, labels), state.rng, axis_name=None)
            return step[0], None

        return jax.lax.scan(body, state, None, length=chunk)[0]

    _, compiled = _compile_s(jax.vmap(fixed_batch_chunk), state)
    print(f"K={k}    {chunk} optimizer steps on a fixed batch: {_run_ms(compiled, state):8.1f} ms")


def profile_conv_in_loop() -> None:
    config = harness.resnet20_config("float32", batch_size=32)
    trainer = train.Trainer(config)
    program = trainer.program
    state = jax.tree.map(lambda x: x[0], trainer.init_state())  # one member, no vmap
    batch = program.pipeline.batch_of_step(state, trainer.arrays, None)
    key = jax.random.PRNGKey(0)

    def one_step(state: program_lib.TrainState) -> program_lib.TrainState:
        return program.train_step(state, batch, key, axis_name=None)[0]

    def scanned(state: program_lib.TrainState) -> program_lib.TrainState:
        return jax.lax.scan(lambda s, _: (one_step(s), None), state, None, length=1)[0]

    for name, fn in (("without a loop", one_step), ("inside lax.scan", scanned)):
        _, compiled = _compile_s(fn, state)
        ms = _run_ms(compiled, state, repeats=1)
        print(f"ResNet-20 batch 32, one train step {name:15s} {ms:9.1f} ms")


# The 3x3 convolution of each ResNet-20 stage: (input height and width, channels in and out).
RESNET20_CONVS = ((32, 16), (16, 32), (8, 64))


def profile_conv_layers(args: argparse.Namespace, batch: int = 128, repeats: int = 10) -> None:
    """One 3x3 conv layer per ResNet-20 stage (NHWC, as `models.ResNetCifar`), forward and forward +
    gradients, against PyTorch's (oneDNN) in the same run when `--torch_python` has torch."""
    names = [f"{size}x{size}x{channels}" for size, channels in RESNET20_CONVS]
    peer = run.run_peer(args, "conv_layers", str(batch), str(repeats), *names)
    for (size, channels), name in zip(RESNET20_CONVS, names, strict=True):
        key = jax.random.PRNGKey(0)
        x = jax.random.normal(key, (batch, size, size, channels))
        kernel = jax.random.normal(key, (3, 3, channels, channels))

        def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
            return jax.lax.conv_general_dilated(
                x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )

        gradients = jax.grad(lambda x, kernel: jnp.sum(jnp.square(conv(x, kernel))), (0, 1))
        for part, fn in (("forward", conv), ("gradients", gradients)):
            _, compiled = _compile_s(fn, x, kernel)
            ms = _run_ms(compiled, x, kernel, repeats=repeats)
            line = f"conv 3x3 {name:9s} batch {batch} {part:9s} {ms:7.2f} ms"
            if peer:
                line += f"   PyTorch {peer['layers'][name][f'{part}_ms']:7.2f} ms"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_cpu", description=__doc__)
    parser.add_argument("--k", type=run.positive, default=16, help="members of the vmapped sweep")
    parser.add_argument("--data_dir", help="MNIST IDX files (default as benchmarks.run)")
    parser.add_argument(
        "--torch_python", default="", help="a Python with torch, for the conv layers' peer"
    )
    parser.add_argument("--only_conv", action="store_true", help="only the conv layers")
    args = parser.parse_args()
    data_dir = run.default_data_dir() if args.data_dir is None else args.data_dir
    if not args.only_conv:
        for k in (1, args.k):
            profile_sweep(k, data_dir)
        profile_conv_in_loop()
    profile_conv_layers(args)


if __name__ == "__main__":
    main()
