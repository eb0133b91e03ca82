"""The start-of-sweep forecast: trials x seeds x steps priced by the training forecast."""

import pytest
from omegaconf import OmegaConf

from slotsweep.errors import SlotsweepError
from slotsweep.sweeps.forecast import sweep_forecast
from slotsweep.training import estimate


def test_a_sweep_costs_its_runs_times_one_run_on_the_gpu_and_this_cpu(compose_train):
    cfg = compose_train("trainer.max_steps=1000")
    block = sweep_forecast(cfg, "a100", n_trials=4, n_seeds=3)

    header, gpu_line, cpu_line = block.splitlines()
    assert header.startswith("Forecast (an estimate, not a measurement): 4 trial(s) x 3 seed(s) x 1000 steps")
    for line, device in [(gpu_line, "a100"), (cpu_line, "cpu")]:
        forecast = estimate.forecast(cfg, device)
        per_run = forecast.gpu_hours[forecast.precision]
        assert line.startswith(f"  {forecast.device_name}, {forecast.precision}:")
        assert f"{per_run:.2f} device-hours a run, {12 * per_run:.1f} in all" in line
    assert ", bf16:" in gpu_line and ", fp32:" in cpu_line  # precision auto: bf16 on the GPU


def test_no_forecast_for_a_task_that_is_not_training():
    assert sweep_forecast(OmegaConf.create({"x": 1, "trainer": {"max_steps": 8}}), "h100", 2, 1) is None


def test_an_unknown_gpu_names_the_sweeper_key(compose_train):
    with pytest.raises(SlotsweepError, match=r"hydra.sweeper.forecast_gpu=tpu is not a GPU of devices.yaml"):
        sweep_forecast(compose_train(), "tpu", 2, 1)
