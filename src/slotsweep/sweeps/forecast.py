"""What a sweep will cost before it starts: every planned trial's seeds trained to
`trainer.max_steps`, priced by the training forecast (slotsweep.training.estimate) on a GPU and on
this machine's CPU. The model's FLOPs are counted once, on meta tensors (no weights, no data)."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from slotsweep.errors import SlotsweepError

__all__ = ["sweep_forecast"]

_TRAINING_KEYS = ("encoder", "dataset", "trainer.max_steps")  # a config the forecast can price


def sweep_forecast(cfg: DictConfig, gpu: str, n_trials: int, n_seeds: int, pool_size: int = 1) -> str | None:
    """The forecast block the sweeper logs at start, for `n_trials` x `n_seeds` runs of `cfg` (the
    sweep's config, swept keys at their values there), with the pool plan on `gpu` when trials are
    pooled (hydra.sweeper.pool_size > 1); None for a task that is not training (no encoder,
    dataset or trainer.max_steps, e.g. a toy task).

    Raises:
        SlotsweepError: `gpu` is not a device of conf/estimate/devices.yaml.
    """
    if any(OmegaConf.select(cfg, key) is None for key in _TRAINING_KEYS):
        return None
    from slotsweep.training import estimate  # torch and the models: for a training sweep only

    devices = estimate.load_devices()
    names = [name for name, spec in devices.items() if isinstance(spec, dict) and name != "cpu"]
    if gpu not in names:
        raise SlotsweepError(
            f"hydra.sweeper.forecast_gpu={gpu} is not a GPU of {estimate.DEVICES_FILE.name}: choose "
            f"from {names}, or null for no forecast"
        )
    flops = estimate.count_flops(cfg)
    runs = n_trials * n_seeds
    lines = [
        f"Forecast (an estimate, not a measurement): {n_trials} trial(s) x {n_seeds} seed(s) x "
        f"{cfg.trainer.max_steps} steps = {runs} run(s), each to its end (pruning only shortens it), "
        "swept keys at the sweep config's values:"
    ]
    for device in (gpu, "cpu"):
        forecast = estimate.forecast(cfg, device, flops=flops, devices=devices)
        fmt = forecast.precision
        hours = forecast.gpu_hours[fmt]
        cores = (
            ""
            if forecast.loader_cores is None
            else f"; loader {math.ceil(forecast.loader_cores)} core(s) a run"
        )
        lines.append(
            f"  {forecast.device_name}, {fmt}: {forecast.step_seconds[fmt]:.3f} s/step, {hours:.2f} "
            f"device-hours a run, {hours * runs:.1f} in all{cores}"
        )
    if pool_size > 1:
        plan = estimate.pool_plan(cfg, gpu, pool_size, flops=flops, devices=devices)
        lines.append(estimate.render_pool_text(plan))
        if pool_size > plan.largest_pool:  # the GPU it runs on may differ: its pool job checks
            lines.append(
                f"  hydra.sweeper.pool_size={pool_size} does not fit {plan.device_name} (estimate): a pool "
                f"job on such a GPU stops with an error line before training; {plan.largest_pool} fit"
            )
    return "\n".join(lines)
