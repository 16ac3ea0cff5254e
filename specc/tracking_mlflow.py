"""The MLflow backend of specc/tracking.py: a run per training, the spec as params, metrics by step, artifacts."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from specc.errors import UserError
from specc.files import atomic_write_text, json_text, read_json
from specc.tracking import numbers


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def mlflow_name(name: str) -> str:
    """MLflow names allow letters, digits, _ - . space : and /; "ndcg@10" becomes "ndcg_at_10"."""
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in name.replace("@", "_at_"))


def flatten(config: dict, prefix: str = "") -> dict:
    """{"body": {"d_model": 64}} -> {"body.d_model": "64"}; lists as JSON."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


RUN_FILE = "mlflow_run.json"   # in the run directory: which MLflow run a resumed training continues


def _artifacts_beside(uri: str) -> str | None:
    """Artifacts of a new experiment in a local SQLite store go beside its database (MLflow's default is ./mlruns of
    whatever folder the command runs in); a server's store decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()


class MlflowLogger:
    """One MLflow run in the experiment named like the spec; at close the plan and the run's files as artifacts.
    A store that cannot be reached at the start is a UserError; one that fails later is reported once and left
    out, so that training goes on (log.jsonl keeps every epoch)."""

    def __init__(self, run_dir, experiment: str, tracking_uri: str | None = None):
        try:
            import logging

            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("log_to mlflow needs the mlflow extra: pip install 'specc[mlflow]'") from None
        self.run_dir, self.failed, self._errors = Path(run_dir), False, MlflowException
        local = self.run_dir.resolve() / "mlflow"
        if tracking_uri is None:
            local.mkdir(parents=True, exist_ok=True)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)   # no schema-migration chatter
        logging.getLogger("alembic").setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")   # not MLflow's 7 (over 4 minutes)
        uri = tracking_uri or f"sqlite:///{local / 'mlflow.db'}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._continued(uri) or self._new_run(experiment, uri)
        except MlflowException as exc:
            raise UserError(f"MLflow tracking at {tracking_uri or local}: {_first_line(exc)}") from None
        atomic_write_text(self.run_dir / RUN_FILE, json_text({"tracking_uri": uri, "run_id": self.run_id}) + "\n")

    def _continued(self, uri: str) -> str | None:
        """The MLflow run of an earlier part of this training (`--resume`) in the same store, set running again."""
        path = self.run_dir / RUN_FILE
        earlier = read_json(path, what="MLflow run record") if path.is_file() else None
        if not isinstance(earlier, dict) or earlier.get("tracking_uri") != uri:
            return None
        try:
            self.client.update_run(earlier["run_id"], status="RUNNING")
        except (self._errors, KeyError, TypeError):   # deleted meanwhile, or a record from elsewhere: a new run
            return None
        return earlier["run_id"]

    def _new_run(self, experiment: str, uri: str) -> str:
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=_artifacts_beside(uri))
        return self.client.create_run(experiment_id, run_name=self.run_dir.name).info.run_id

    def _call(self, method, *args, **kwargs) -> None:
        if self.failed:
            return
        try:
            method(*args, **kwargs)
        except self._errors as exc:
            self.failed = True
            print(f"warning: MLflow stopped answering ({_first_line(exc)}); the run goes on without it, its "
                  f"metrics are in {self.run_dir / 'log.jsonl'}", file=sys.stderr)

    def log_config(self, config: dict) -> None:
        """The spec and settings as params; a continued run's settings that changed (a larger --epochs) as
        `resumed.<key>` tags, since MLflow keeps a param's first value."""
        from mlflow.entities import Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
        try:
            logged = self.client.get_run(self.run_id).data.params
        except self._errors:
            logged = {}   # log_batch below then reports the store once, as every later call would
        values = {mlflow_name(k): v[:MAX_PARAM_VAL_LENGTH] for k, v in flatten(config).items()}
        params = [Param(k, v) for k, v in values.items() if k not in logged]
        tags = [RunTag(f"resumed.{k}", v) for k, v in values.items() if k in logged and logged[k] != v]
        for i in range(0, max(len(params), len(tags)), MAX_PARAMS_TAGS_PER_BATCH):
            self._call(self.client.log_batch, self.run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH],
                       tags=tags[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self._call(self.client.log_batch, self.run_id, metrics=[Metric(mlflow_name(k), v, now, step)
                                                                for k, v in numbers(metrics).items()])

    def close(self, ok: bool = True) -> None:
        for path in sorted(self.run_dir.iterdir()):   # the run's own files; not the trackers' folders
            if path.is_file() and path.name != RUN_FILE:
                self._call(self.client.log_artifact, self.run_id, str(path),
                           "plan" if path.name == "plan.json" else "run")
        self._call(self.client.set_terminated, self.run_id, "FINISHED" if ok else "FAILED")
