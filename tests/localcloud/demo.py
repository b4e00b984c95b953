"""``make demo``'s last steps: log a sample experiment to the freshly bootstrapped server,
and, once ``fab serve-model`` serves its model, show how to call it.

Logs params, a metric over steps, a plot and a registered scikit-learn model (alias
``champion``) through the TLS proxy with the admin credentials, then prints how to
reach it. ``--model`` prints the served model's curl line and its answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

MODEL = "demo-classifier"
#: Two iris flowers (sepal and petal length and width, cm): a setosa and a virginica.
SAMPLE = '{"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'


def main(settings_path: str) -> int:
    settings = yaml.safe_load(Path(settings_path).read_text())
    host = settings["host"]
    cert = Path(settings_path).with_name("demo-server.crt")
    ssh = [
        "ssh",
        "-i",
        settings["ssh_key_file"],
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-F",
        "/dev/null",
        f"{settings['ssh_user']}@{host}",
        "sudo cat /etc/mlflow/tls/server.crt",
    ]
    cert.write_text(subprocess.run(ssh, capture_output=True, text=True, check=True).stdout)
    url = f"https://{host}"
    os.environ.update(
        MLFLOW_TRACKING_URI=url,
        MLFLOW_TRACKING_USERNAME="admin",
        MLFLOW_TRACKING_PASSWORD=settings["admin_password"],
        MLFLOW_TRACKING_SERVER_CERT_PATH=str(cert),
    )
    run_id = log_sample_experiment()
    print()
    print(f"MLflow is up:     {url}   (self-signed certificate: {cert})")
    print("user:             admin")
    print(f"password:         {settings['admin_password']}")
    print(f"try:              curl --cacert {cert} -u admin:<password> {url}/health")
    print(f"sample run:       {url}/#/experiments (run {run_id}, model '{MODEL}' @champion)")
    return 0


def show_model(settings_path: str) -> int:
    """The served model's curl line, and what it answers."""
    import requests

    settings = yaml.safe_load(Path(settings_path).read_text())
    cert = Path(settings_path).with_name("demo-server.crt")
    endpoint = f"https://{settings['host']}/models/{MODEL}/invocations"
    answer = requests.post(
        endpoint,
        data=SAMPLE,
        headers={"Content-Type": "application/json"},
        auth=("admin", settings["admin_password"]),
        verify=str(cert),
        timeout=60,
    )
    print()
    print(f"model endpoint:   {endpoint}   (fab models --settings {settings_path})")
    print(
        f"try:              curl --cacert {cert} -u admin:<password> "
        f"-H 'Content-Type: application/json' -d '{SAMPLE}' {endpoint}"
    )
    print(f"it answers:       {answer.status_code} {answer.text.strip()}")
    print("stop everything:  make demo-down")
    return 0 if answer.status_code == 200 else 1


def log_sample_experiment() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, random_state=0)
    mlflow.set_experiment("demo-iris")
    with mlflow.start_run() as run:
        accuracies = []
        for step, c in enumerate((0.01, 0.1, 1.0, 10.0)):
            model = LogisticRegression(C=c, max_iter=500).fit(x_train, y_train)
            accuracies.append(model.score(x_test, y_test))
            mlflow.log_metric("accuracy", accuracies[-1], step=step)
        mlflow.log_params({"C_values": "0.01,0.1,1,10", "max_iter": 500})
        figure, axis = plt.subplots()
        axis.plot([0.01, 0.1, 1.0, 10.0], accuracies, marker="o")
        axis.set_xscale("log")
        axis.set(xlabel="C", ylabel="test accuracy")
        mlflow.log_figure(figure, "accuracy_vs_C.png")
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL, input_example=x_test[:2]
        )
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", version)
    print(
        f"logged run {run.info.run_id}: accuracy {accuracies[-1]:.3f}, plot, "
        f"model {MODEL} version {version} @champion"
    )
    return run.info.run_id


if __name__ == "__main__":
    if sys.argv[1] == "--model":
        sys.exit(show_model(sys.argv[2]))
    sys.exit(main(sys.argv[1]))
