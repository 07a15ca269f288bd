"""The training wing, the only code that imports Lightning: the LightningModule (`module`), the DataModule
(`datamodule`), one run end to end (`run`), its callbacks (`callbacks/`), run folder, card and launch helpers.

This file imports nothing, so that `minigpt.training.config` (a run's settings, `TrainConfig`), `launch` and
friends load without Lightning."""
