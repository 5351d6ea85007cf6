"""The self-training pipeline: supervised source / oracle training, self-training with
EMA teachers and per-iteration pseudo-labels, evaluation, reports, checkpoints, DDP.

    train_supervised(cfg, out_dir, *, stage="source"|"oracle", resume, max_steps, device)
    self_train(cfg, out_dir, *, init, resume, max_steps, device)
    run_demo(cfg, out_dir, *, resume)
    evaluate_checkpoint(path, *, seed, style, n_scenes, device, out)
    write_pseudo_labels(checkpoint, out_dir, ...), export_predictions(checkpoint, out_dir, ...)

Submodules are imported lazily by the command line; import them directly.
"""

__all__ = ["train_supervised", "self_train", "run_demo", "evaluate_checkpoint"]


def __getattr__(name):
    if name == "train_supervised":
        from pst.train.source import train_supervised
        return train_supervised
    if name == "self_train":
        from pst.train.selftrain import self_train
        return self_train
    if name == "run_demo":
        from pst.train.demo import run_demo
        return run_demo
    if name == "evaluate_checkpoint":
        from pst.train.evaluate import evaluate_checkpoint
        return evaluate_checkpoint
    raise AttributeError(f"module 'pst.train' has no attribute {name!r}")
