"""deploy/kubernetes: every manifest is valid against the Kubernetes API's JSON schemas,
offline, and the manifests fit auditrelay and each other.

The schemas come with ``kubernetes-validate`` (a dev dependency, requirements-dev.lock),
checked strictly (an unknown field is an error) for the oldest and the newest
Kubernetes release it bundles that we name here. Then what a schema cannot know: the
commands are CLI commands, every stage runs somewhere, settings names exist, probes
and Services name ports the pods have, and the Secret holds placeholders only.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from auditrelay.api.routes.health import router as health_router
from auditrelay.ops.cli import cli
from auditrelay.schemas.settings import WORKER_STAGES, Settings

KUBERNETES = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
#: The oldest release still maintained upstream when this was written, and the newest bundled.
VERSIONS = ("1.32.0", "1.37.0")
#: Settings set here that another branch of issue #15 adds to ``Settings``.
REPLICATION = {"AUDITRELAY_TOPIC_REPLICATION_FACTOR", "AUDITRELAY_TOPIC_MIN_INSYNC_REPLICAS"}
Doc = dict[str, Any]


@functools.cache
def documents() -> tuple[tuple[str, Doc], ...]:
    """(file name, document) of every manifest, parsed once (tests must not change them)."""
    return tuple((path.name, doc) for path in sorted(KUBERNETES.glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc is not None)


def manifests() -> list[tuple[str, Doc]]:
    return [(name, doc) for name, doc in documents() if doc["kind"] != "Kustomization"]


def of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def pod_specs() -> list[tuple[str, Doc]]:
    """(name, pod template) of every Deployment and Job."""
    return [(doc["metadata"]["name"], doc["spec"]["template"])
            for doc in of_kind("Deployment") + of_kind("Job")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), manifests(),
                         ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in manifests()])
def test_every_manifest_is_valid(name: str, doc: Doc, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type", "missing field"])
def test_the_validation_refuses_a_broken_deployment(breakage: str) -> None:
    deployment = copy.deepcopy(next(d for d in of_kind("Deployment")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if breakage == "unknown field":
        container["livenesProbe"] = container.pop("livenessProbe")
    elif breakage == "wrong type":
        deployment["spec"]["replicas"] = "two"
    else:
        del container["name"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_kustomization_applies_every_manifest() -> None:
    (kustomization,) = [doc for _, doc in documents() if doc["kind"] == "Kustomization"]
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert [image["name"] for image in kustomization["images"]] == ["auditrelay"]
    for _, pod in pod_specs():
        assert all(c["image"] == "auditrelay" for c in pod["spec"]["containers"])
    assert {doc["metadata"].get("namespace") for _, doc in manifests()
            if doc["kind"] != "Namespace"} == {kustomization["namespace"]}


def test_containers_run_cli_commands_and_the_workers_run_every_stage() -> None:
    ctx = click.Context(cli)
    stages: list[str] = []
    for name, pod in pod_specs():
        (container,) = pod["spec"]["containers"]
        args = container["args"]
        command = cli.get_command(ctx, args[0])
        assert command is not None, name
        if isinstance(command, click.Group):
            assert command.get_command(ctx, args[1]) is not None, name
        if args[0] == "worker":
            assert args[1] == "--stages", name
            stages.extend(args[2].split(","))
    assert sorted(stages) == sorted(WORKER_STAGES), "each stage in exactly one Deployment"
    jobs = {tuple(job["spec"]["template"]["spec"]["containers"][0]["args"])
            for job in of_kind("Job")}
    assert jobs == {("db", "upgrade"), ("topics", "ensure")}


def test_settings_are_real_and_the_secret_holds_placeholders_only() -> None:
    known = {f"AUDITRELAY_{name.upper()}" for name in Settings.model_fields}
    (config,) = of_kind("ConfigMap")
    (secret,) = of_kind("Secret")
    assert set(config["data"]) - known - REPLICATION == set()
    assert set(secret["stringData"]) <= known
    assert {"AUDITRELAY_SECRET_KEY", "AUDITRELAY_ADMIN_TOKEN"} <= set(secret["stringData"])
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())
    assert not set(config["data"]) & set(secret["stringData"])
    for name, pod in pod_specs():
        (container,) = pod["spec"]["containers"]
        assert container["envFrom"] == [
            {"configMapRef": {"name": config["metadata"]["name"]}},
            {"secretRef": {"name": secret["metadata"]["name"]}}], name


def test_every_deployment_is_probed_on_a_port_it_has() -> None:
    health = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
    for deployment in of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["port"] in ports, (deployment["metadata"]["name"], probe)
            if container["args"][0] == "api":
                assert get["path"] in health
            else:  # the worker's only endpoint: its metrics (Settings.metrics_port)
                assert (get["path"], ports[get["port"]]) == (
                    "/metrics", Settings.model_fields["metrics_port"].default)


def test_services_select_pods_with_the_ports_they_name() -> None:
    pods = [pod for _, pod in pod_specs() if pod in
            [d["spec"]["template"] for d in of_kind("Deployment")]]
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        chosen = [pod for pod in pods
                  if selector.items() <= pod["metadata"]["labels"].items()]
        assert chosen, service["metadata"]["name"]
        for pod in chosen:
            names = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in names, service["metadata"]["name"]
