"""Runs: what one run owns on disk.

A run's identity (exp_id) and dir with its results.json (`experiment`), the lock that keeps one
trainer per dir (`lock`), checkpoint files written whole (`checkpoint_files`), reading them
without running code (`safe_load`), the files a sweep trial talks through (`trial_files`), and
where a sweep's Optuna study lives (`study_storage`). Imports only the base modules (errors,
config): everything else may use it.
"""
