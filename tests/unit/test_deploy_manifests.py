"""The Kubernetes manifests under deploy/kubernetes against the code they run.

Read as written (no kustomize needed): every variable the ConfigMap and Secret set is a setting and
the values make valid Settings; every command a container runs parses with the `arrears` CLI; the
probes and the Prometheus annotations point at paths the service's app serves, on the port it
listens on; the workers mount the directories the settings name; no worker Deployment asks for more
replicas than its consumer group has partitions to share; every service is deployed.
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import AliasChoices

from contracts.topics import ALL as TOPICS
from services import cli
from services.runtime.database import make_engine, make_sessions
from services.runtime.memory_log import InProcessLog
from services.runtime.process import Resources
from services.runtime.service import Service
from services.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = sorted(p.parent for p in KUBERNETES.glob("overlays/*/kustomization.yaml"))
Document = dict[str, Any]


def documents() -> Iterator[tuple[Path, Document]]:
    """Every Kubernetes object in base and the overlays (patches included), with its file."""
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and "kind" in document:
                yield path, document


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value
    return pairs


def kustomization(directory: Path) -> Document:
    loaded: Document = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return loaded


def generated(directory: Path, kind: str, start: dict[str, str]) -> dict[str, str]:
    """The data of the ConfigMap (kind configMapGenerator) or Secret (secretGenerator) named arrears-*
    that this kustomization generates, on top of `start` (the base's) by its behavior."""
    data = dict(start)
    for generator in kustomization(directory).get(kind, []):
        if generator.get("behavior") == "replace":
            data = {}
        for env in generator.get("envs", []):
            data.update(env_file(directory / env))
        for literal in generator.get("literals", []):
            name, _, value = literal.partition("=")
            data[name] = value
    return data


def configurations() -> list[tuple[str, dict[str, str]]]:
    """(where, the environment that envFrom gives every container) for base and each overlay."""
    config = generated(BASE, "configMapGenerator", {})
    secrets = generated(BASE, "secretGenerator", {})
    found = [("base", config | secrets)]
    for overlay in OVERLAYS:
        found.append(
            (
                overlay.name,
                generated(overlay, "configMapGenerator", config)
                | generated(overlay, "secretGenerator", secrets),
            )
        )
    return found


def setting_variables() -> set[str]:
    """The environment variables Settings reads (case-insensitively): prefix + field name, or the
    field's aliases."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(prefix + field_name)
    return {name.upper() for name in names}


def pod_spec(document: Document) -> Document | None:
    spec = document.get("spec") or {}
    if document["kind"] in ("Deployment", "Job"):
        return dict(spec["template"]["spec"])
    if document["kind"] == "CronJob":
        return dict(spec["jobTemplate"]["spec"]["template"]["spec"])
    return None


def containers() -> Iterator[tuple[Path, Document, Document]]:
    """(file, workload, container) of every container the base defines."""
    for path, document in documents():
        spec = pod_spec(document) if path.parent == BASE else None
        if spec is not None:
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                yield path, document, container


def argv(container: Document) -> list[str]:
    """The `arrears` arguments the container runs: `args` after the image's entrypoint, or the words
    after `exec arrears` in a shell command (its variables and command substitutions filled in)."""
    if container.get("command", [])[:2] != ["/bin/sh", "-c"]:
        assert "command" not in container, "the image's entrypoint is arrears: set args only"
        return [str(a) for a in container["args"]]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    script = container["args"][0].replace("$(date +%F)", "2026-12-01")
    for name, value in env.items():
        script = script.replace(f"${name}", value)
    words = shlex.split(script)
    assert words[:2] == ["exec", "arrears"], script
    return words[2:]


def service_classes() -> dict[str, Callable[[Resources], Service]]:
    """Every service of services/<name>/main.py, by name."""
    found: dict[str, Callable[[Resources], Service]] = {}
    for main in sorted((ROOT / "services").glob("*/main.py")):
        module = importlib.import_module(f"services.{main.parent.name}.main")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Service) and value is not Service:
                found[main.parent.name] = value
    return found


def service(name: str) -> Service:
    """The service as `arrears serve` builds it, on a database it never connects to here."""
    engine = make_engine("postgresql+asyncpg://arrears@127.0.0.1:9/arrears")
    resources = Resources(Settings(), engine, make_sessions(engine), InProcessLog())
    return service_classes()[name](resources)


def served(container: Document) -> tuple[str, bool]:
    words = argv(container)
    assert words[0] == "serve", words
    return words[1], "--api-only" in words


def test_every_configured_variable_is_a_setting() -> None:
    known = setting_variables()
    for where, environment in configurations():
        unknown = sorted(set(environment) - known)
        assert not unknown, f"{where}: not settings of services/runtime/settings.py: {unknown}"
    for path, document, container in containers():
        for variable in container.get("env", []):
            if variable["name"].startswith("ARREARS_"):
                assert variable["name"].upper() in known, f"{path.name} {document['metadata']['name']}"


@pytest.mark.parametrize("where, environment", configurations(), ids=[w for w, _ in configurations()])
def test_the_configuration_makes_valid_settings(
    where: str, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("ARREARS_") or name.upper() == "DATABASE_URL":
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    # In a cluster: never the embedded PostgreSQL (a read-only container) nor the log kept in it.
    assert settings.database_url is not None and settings.kafka_bootstrap_servers
    assert settings.http_host == "0.0.0.0"
    for _, document, container in containers():
        if document["kind"] != "Deployment":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == settings.http_port
        annotations = document["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(settings.http_port)
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        name, api_only = served(container)
        if name == "notifier" and not api_only:
            assert str(settings.letters_dir) in mounts, "the notifier worker writes letters to a volume"
        if name == "scoring" and not api_only:
            assert str(settings.scoring_model_dir) in mounts


def test_every_command_parses() -> None:
    root = typer.main.get_command(cli.app)
    for path, document, container in containers():
        words = argv(container)
        command: Any = root
        # Groups by what they have (typer may bring its own copy of click's classes).
        while hasattr(command, "commands") and words and words[0] in command.commands:
            command = command.commands[words.pop(0)]
        where = f"{path.name} {document['metadata']['name']} {container['name']}"
        assert not hasattr(command, "commands"), f"{where}: {argv(container)} names no command"
        command.make_context(command.name, list(words))  # raises on an option or value it does not take
        if command.name == "serve":
            assert words[0] in service_classes(), f"{where}: no service {words[0]}"


def test_probes_and_metrics_are_served() -> None:
    checked = 0
    for path, document, container in containers():
        if document["kind"] != "Deployment":
            continue
        name, api_only = served(container)
        paths = {
            getattr(route, "path", None) for route in service(name).app(run_background=not api_only).routes
        }
        where = f"{path.name} {document['metadata']['name']}"
        probes = {p: container[p]["httpGet"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
        for probe, get in probes.items():
            assert get["path"] in paths, f"{where}: {probe} on {get['path']}, which {name} does not serve"
            assert get["port"] == "http", where
        assert probes["readinessProbe"]["path"] == "/readyz", where
        assert probes["livenessProbe"]["path"] == "/healthz", where
        annotations = document["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", where
        assert annotations["prometheus.io/path"] in paths, where
        checked += 1
    assert checked == 2 * len(service_classes())


def test_every_service_has_an_api_and_a_worker() -> None:
    deployed: dict[tuple[str, bool], str] = {}
    for _, document, container in containers():
        if document["kind"] == "Deployment":
            deployed[served(container)] = document["metadata"]["name"]
    for name in service_classes():
        assert (name, True) in deployed and (name, False) in deployed, f"{name} is not deployed"
    scaled = {
        d["spec"]["scaleTargetRef"]["name"] for _, d in documents() if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert scaled == {deployed[(name, True)] for name in service_classes()}, "autoscale the APIs alone"


def test_workers_ask_for_no_more_replicas_than_partitions() -> None:
    partitions = {topic.name: topic.partitions for topic in TOPICS}
    workers = {}
    for _, document, container in containers():
        if document["kind"] == "Deployment":
            name, api_only = served(container)
            if not api_only:
                workers[document["metadata"]["name"]] = max(
                    partitions[t] for t in service(name).consumer.topics
                )
    assert workers
    for path, document in documents():
        limit = workers.get(document["metadata"]["name"]) if document["kind"] == "Deployment" else None
        replicas = document.get("spec", {}).get("replicas")
        if limit is not None and replicas is not None:
            assert replicas <= limit, (
                f"{path.relative_to(KUBERNETES)}: {document['metadata']['name']} asks for {replicas} "
                f"replicas; its consumer group has {limit} partitions to share, the rest would sit idle"
            )
