"""train-full / train-lora: fine-tune the task's model (models/<task>/<method>)."""

from reprotune.core import paths
from reprotune.core.cli import expect_args, run_stage
from reprotune.core.params import load_task
from reprotune.tasks import get_family
from reprotune.training.train import train


def main(args: list[str]) -> str:
    task_name, method = expect_args(args, ["task", "full|lora"], "stages/train.py")
    task = load_task(task_name)
    info = train(task_name, method, task, get_family(task.type))
    return (
        f"train-{method} {task_name}: {info['train_seconds']:.0f}s, {info['train_samples_per_second']:.1f} samples/s, "
        f"{info['trainable_params']:,}/{info['total_params']:,} params trained, best {info['best_checkpoint_metric']}"
        f" -> {paths.model_dir(task_name, method)}"
    )


if __name__ == "__main__":
    run_stage(main)
