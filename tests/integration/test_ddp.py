"""trainer=ddp_cpu: two processes (gloo) train one run, and only rank 0 writes its files."""

import dataclasses
import json

DDP_CPU = [  # trainer=debug's shrinking on the ddp_cpu preset (one trainer option at a time)
    "trainer=ddp_cpu",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "checkpoint_every_n_steps=2",
    "dataset.batch_size=2",
    "dataset.val_batch_size=2",
    "dataset.num_workers=0",
    "logger=csv",
]


def test_two_processes_write_one_run(cli) -> None:
    tiny_data = [arg for arg in cli.train_args if arg.startswith("dataset.")]  # without trainer=debug
    result = dataclasses.replace(cli, train_args=tiny_data).run("train.py", *DDP_CPU)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (results_file,) = cli.runs_dir.glob("**/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "completed" and results["step"] == 2
    assert results["config"]["trainer"]["devices"] == 2
    assert (results_file.parent / "config.yaml").is_file()
    assert (result.stdout + result.stderr).count("results: ") == 1  # rank 1 says nothing of its own
    assert "sync_dist=True" not in result.stderr  # validation values are reduced across ranks
