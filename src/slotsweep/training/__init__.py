"""Training: the tasks that drive a model through Lightning.

The train task's lifecycle (`task`), re-scoring checkpoints (`scoring`), the LightningModule,
its callbacks, progress lines, pictures, cost, loggers and the end-of-run report. Above models/,
data/, evaluation/ and results/; only sweeps/ and the entry points import it.
"""
