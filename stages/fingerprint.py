"""fingerprint: digest the task's data and model sources (data/<task>/fingerprint/), so a
changed file or package reruns what reads it. Runs on every `dvc repro` (always_changed)
but its outs only change when the content does."""

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.atomic import write_json
from reprotune.core.cli import expect_args, run_stage
from reprotune.core.fingerprint import HashCache, data_fingerprint, model_fingerprint


def main(args: list[str]) -> str:
    (task_name,) = expect_args(args, ["task"], "stages/fingerprint.py")
    tasks.check_params_file(task_name)  # the first stage to run: a bad params file stops here, before any training
    task = tasks.load_task(task_name, "fingerprint")
    cache = HashCache()
    data = data_fingerprint(task.download.model_dump(mode="json"), cache)
    model = model_fingerprint(task.model.model_dump(mode="json"), cache)
    cache.save()
    write_json(paths.fingerprint_file(task_name, "data"), data)
    write_json(paths.fingerprint_file(task_name, "model"), model)
    return f"fingerprint {task_name}: {paths.fingerprint_file(task_name, 'data').parent}"


if __name__ == "__main__":
    run_stage(main, libraries=False)
