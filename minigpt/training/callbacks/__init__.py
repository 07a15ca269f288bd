"""The Lightning callbacks of a run: what it shows while training (`views`), when it saves and stops
(`checkpoints`), its speed lines (`progress`) and what it records for people (`record`)."""
