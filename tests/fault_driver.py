"""`python tests/fault_driver.py FAULT specc-arguments...`: runs the specc command line with one fault injected, for
tests/test_faults.py. The faults kill the process with SIGKILL (as `kill -9` would) at a chosen point:

  none                 no fault
  validation           while the data are opened and validated
  step:N               right after optimizer step N
  save:state:K         inside the K-th checkpoint write, after its weights were written, before its state
  save:publish:K       inside the K-th checkpoint write, with its folder in place, before the pointer names it
  best:K               at the K-th best epoch (training.early_stopping), logged, before best.json names it
  evaluation:K         inside the K-th evaluation
  hold:PATH            after step 1, writes PATH and sleeps (a writer that is still busy)
"""
import os
import signal
import sys
import time
from pathlib import Path


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def on_call(function, k: int, before=die):
    """`function`, calling `before` first on its k-th call."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            before()
        return function(*args, **kwargs)
    return wrapped


def after_steps(n: int, then):
    import specc.train as train
    build = train.build_schedule

    def build_schedule(*args, **kwargs):
        scheduler = build(*args, **kwargs)
        plain = type(scheduler)

        def counted(self):
            plain.step(self)
            if self.last_epoch == n:
                then()
        # a subclass, not an instance attribute: the scheduler's state_dict() would save the attribute
        scheduler.__class__ = type("Counted" + plain.__name__, (plain,), {"step": counted})
        return scheduler
    train.build_schedule = build_schedule


def before_writing(name: str, k: int) -> None:
    """Die before the k-th atomic write of the run directory's file `name` (a pointer)."""
    import specc.publish as publish
    write = publish.atomic_write_text
    kth_write = on_call(write, k)
    publish.atomic_write_text = lambda path, *a, **kw: (kth_write if Path(path).name == name else write)(
        path, *a, **kw)


def inject(fault: str) -> None:
    import specc.run_dir as run_dir
    import specc.train as train
    import specc.train_inputs as inputs
    kind, _, arg = fault.partition(":")
    if kind == "validation":
        inputs.open_for = on_call(inputs.open_for, 1)
    elif kind == "step":
        after_steps(int(arg), die)
    elif kind == "hold":
        after_steps(1, lambda: (Path(arg).write_text(str(os.getpid())), time.sleep(120)))
    elif kind == "save":
        phase, k = arg.split(":")
        if phase == "state":
            run_dir.save_train_state = on_call(run_dir.save_train_state, int(k))
        else:
            before_writing("checkpoint.json", int(k))
    elif kind == "best":
        before_writing("best.json", int(arg))
    elif kind == "evaluation":
        train.evaluate = on_call(train.evaluate, int(arg))
    elif kind != "none":
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    inject(sys.argv[1])
    from specc.cli import main
    sys.exit(main(sys.argv[2:]))
