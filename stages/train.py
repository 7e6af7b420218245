"""train-full / train-lora: fine-tune the task's model (models/<task>/<method>)."""

from reprotune import tasks
from reprotune.core import paths
from reprotune.core.cli import expect_args, run_stage
from reprotune.training.chosen import chosen_overrides
from reprotune.training.train import train


def main(args: list[str]) -> str:
    task_name, method = expect_args(args, ["task", "full|lora"], "stages/train.py")
    paths.check_method(method)
    task = tasks.load_task(task_name, f"train-{method}")
    info = train(task_name, method, task, chosen_overrides(task_name, method))
    return (
        f"train-{method} {task_name}: {info['train_seconds']:.0f}s, {info['train_samples_per_second']:.1f} samples/s, "
        f"{info['trainable_params']:,}/{info['total_params']:,} params trained, best {info['best_checkpoint_metric']}"
        f" -> {paths.model_dir(task_name, method)}"
    )


if __name__ == "__main__":
    run_stage(main)
