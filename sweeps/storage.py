"""Whether a run's files are where every node of the cluster (and the next job) finds them.

Every node reads the image cache and the backbone store (``data.cache_dir``) and writes the run
folder (``--output``) with plain file operations (cluster/README.md). A relative path is
resolved in the driver's working directory, which under ``ray job submit --working-dir`` is the
job's own unpacked copy on the head node: no other node sees it, and the next job gets a new
one. ``storage_problems`` says so before anything is imported or trained, instead of a stage
failing on another node after pretraining.
"""

from __future__ import annotations

from pathlib import Path


def storage_problems(cache_dir: str | Path, output: str | Path, nodes: int,
                     job_working_dir: bool) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for a run on ``nodes`` alive nodes whose driver runs in a job's
    unpacked working directory (``job_working_dir``) or not."""
    errors: list[str] = []
    warnings: list[str] = []
    for key, path, hint in (
            ("data.cache_dir", cache_dir, "--set data.cache_dir=/mnt/shared/cache"),
            ("--output", output, "--output /mnt/shared/runs")):
        if Path(path).expanduser().is_absolute():
            continue
        where = f"{key} {str(path)!r} is relative to the driver's working directory"
        if nodes > 1:
            errors.append(f"{where}, which the other {nodes - 1} node(s) of this cluster do "
                          f"not see: give a path every node mounts, e.g. {hint}")
        elif job_working_dir:
            kept = ("the prepared images and stored backbones are not reused by the next job"
                    if key == "data.cache_dir" else
                    "the run folder is left in this job's copy of the working directory")
            warnings.append(f"{where}, this job's unpacked --working-dir: {kept}; give an "
                            f"absolute path, e.g. {hint}")
    return errors, warnings
