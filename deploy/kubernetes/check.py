"""Render deploy/kubernetes/base and every overlay with kustomize and check each document, offline.

    python deploy/kubernetes/check.py --kustomize PATH [DIR ...]

Each document is validated, unknown fields refused, against the Kubernetes JSON schemas that the
kubernetes-validate package ships, for the oldest and the newest Kubernetes version Arrears is
checked against. Then what refers to another object must find it in the same rendering: the
ConfigMaps, Secrets and claims that pods read, the named ports of probes and Services, the pods a
Service, a PodDisruptionBudget or a HorizontalPodAutoscaler selects. Every container's security
context must give what the restricted Pod Security Standard asks of it (non-root, no privilege
escalation, no capabilities, a seccomp profile) and a read-only root filesystem. Every failure is
listed; the exit status is 1 when there is one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml

HERE = Path(__file__).resolve().parent
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
"""The oldest Kubernetes the manifests are checked against, and the newest the schemas cover."""

Document = dict[str, Any]


def render(kustomize: str, directory: Path) -> list[Document]:
    built = subprocess.run(
        [kustomize, "build", str(directory)], capture_output=True, text=True, check=False, timeout=120
    )
    if built.returncode != 0:
        raise RenderError(built.stderr.strip() or f"kustomize exited with {built.returncode}")
    return [d for d in yaml.safe_load_all(built.stdout) if d is not None]


class RenderError(Exception):
    pass


def name_of(document: Document) -> str:
    meta = document.get("metadata") or {}
    return f"{document.get('kind')}/{meta.get('name')}"


def schema_errors(document: Document) -> Iterator[str]:
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path) or "(document)"
            yield f"{name_of(document)}: Kubernetes {version} schema: {where}: {exc.message}"
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{name_of(document)}: Kubernetes {version} has no {document.get('apiVersion')}"


def pod_spec(document: Document) -> Document | None:
    spec = document.get("spec") or {}
    kind = document.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return dict(spec["template"]["spec"])
    if kind == "CronJob":
        return dict(spec["jobTemplate"]["spec"]["template"]["spec"])
    return None


def pod_labels(document: Document) -> dict[str, str]:
    spec = document.get("spec") or {}
    template = spec.get("template") or {}
    return dict((template.get("metadata") or {}).get("labels") or {})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def restricted_errors(where: str, pod: Document, container: Document) -> Iterator[str]:
    """What the restricted Pod Security Standard asks of a container's and its pod's security context."""
    if not (container.get("runAsNonRoot") or pod.get("runAsNonRoot")):
        yield f"{where}: runAsNonRoot is not set"
    if container.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation is not false"
    if "ALL" not in ((container.get("capabilities") or {}).get("drop") or []):
        yield f"{where}: does not drop ALL capabilities"
    seccomp = container.get("seccompProfile") or pod.get("seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        yield f"{where}: no RuntimeDefault seccomp profile"
    if container.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: the root filesystem is writable"


def reference_errors(documents: list[Document]) -> Iterator[str]:
    present = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in documents}

    def missing(kind: str, name: str | None) -> bool:
        return (kind, name) not in present

    workloads = [d for d in documents if pod_spec(d) is not None]
    for workload in workloads:
        spec = pod_spec(workload) or {}
        containers = spec.get("containers", []) + spec.get("initContainers", [])
        account = spec.get("serviceAccountName")
        if account and missing("ServiceAccount", account):
            yield f"{name_of(workload)}: no ServiceAccount {account}"
        for volume in spec.get("volumes", []):
            if "configMap" in volume and missing("ConfigMap", volume["configMap"].get("name")):
                yield f"{name_of(workload)}: volume {volume['name']}: no ConfigMap {volume['configMap']}"
            if "secret" in volume and missing("Secret", volume["secret"].get("secretName")):
                yield f"{name_of(workload)}: volume {volume['name']}: no Secret {volume['secret']}"
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and missing("PersistentVolumeClaim", claim):
                yield f"{name_of(workload)}: volume {volume['name']}: no PersistentVolumeClaim {claim}"
        volumes = {v["name"] for v in spec.get("volumes", [])}
        pod_security = spec.get("securityContext") or {}
        for container in containers:
            where = f"{name_of(workload)} container {container['name']}"
            yield from restricted_errors(where, pod_security, container.get("securityContext") or {})
            for source in container.get("envFrom", []):
                if "configMapRef" in source and missing("ConfigMap", source["configMapRef"]["name"]):
                    yield f"{where}: no ConfigMap {source['configMapRef']['name']}"
                if "secretRef" in source and missing("Secret", source["secretRef"]["name"]):
                    yield f"{where}: no Secret {source['secretRef']['name']}"
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    yield f"{where}: mounts {mount['name']}, which is no volume of the pod"
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    yield f"{where}: {probe} on port {port!r}, which the container does not name"
            if ":" not in container.get("image", "").rsplit("/", 1)[-1]:
                yield f"{where}: image {container.get('image')!r} has no tag"

    deployments = [d for d in documents if d.get("kind") == "Deployment"]
    for service in (d for d in documents if d.get("kind") == "Service"):
        selector = (service.get("spec") or {}).get("selector") or {}
        targets = [d for d in workloads if selects(selector, pod_labels(d))]
        if not targets:
            yield f"{name_of(service)}: its selector {selector} matches no pod template"
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort")
            for workload in targets:
                declared = [p for c in (pod_spec(workload) or {})["containers"] for p in c.get("ports", [])]
                if target not in {p.get("name") for p in declared} | {
                    p.get("containerPort") for p in declared
                }:
                    yield f"{name_of(service)}: targetPort {target!r} is no port of {name_of(workload)}"
    for budget in (d for d in documents if d.get("kind") == "PodDisruptionBudget"):
        selector = ((budget.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(selects(selector, pod_labels(d)) for d in deployments):
            yield f"{name_of(budget)}: its selector {selector} matches no Deployment's pods"
    for scaler in (d for d in documents if d.get("kind") == "HorizontalPodAutoscaler"):
        target = scaler["spec"]["scaleTargetRef"]
        if missing(target["kind"], target["name"]):
            yield f"{name_of(scaler)}: no {target['kind']} {target['name']} to scale"
        scaled = next((d for d in deployments if d["metadata"]["name"] == target["name"]), None)
        if scaled is not None and "replicas" in scaled["spec"]:
            yield f"{name_of(scaler)}: {name_of(scaled)} sets replicas, which fights the autoscaler"
        for container in (pod_spec(scaled) or {}).get("containers", []) if scaled else []:
            if "cpu" not in ((container.get("resources") or {}).get("requests") or {}):
                yield f"{name_of(scaler)}: container {container['name']} requests no CPU to scale on"


def kustomizations() -> list[Path]:
    return [HERE / "base", *sorted(p.parent for p in (HERE / "overlays").glob("*/kustomization.yaml"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kustomize", default="kustomize", help="the kustomize binary")
    parser.add_argument("directories", nargs="*", type=Path, help="default: base and every overlay")
    options = parser.parse_args()
    failures = 0
    for directory in options.directories or kustomizations():
        label = directory.relative_to(HERE) if directory.is_relative_to(HERE) else directory
        try:
            documents = render(options.kustomize, directory)
        except RenderError as exc:
            print(f"{label}: kustomize build failed: {exc}", flush=True)
            failures += 1
            continue
        errors = [e for d in documents for e in schema_errors(d)] + list(reference_errors(documents))
        for error in errors:
            print(f"{label}: {error}", flush=True)
        failures += len(errors)
        kinds = sorted({str(d.get("kind")) for d in documents})
        verdict = "ok" if not errors else f"{len(errors)} error(s)"
        print(f"{label}: {len(documents)} documents ({', '.join(kinds)}): {verdict}")
    versions = " and ".join(KUBERNETES_VERSIONS)
    print(f"kubernetes-validate {kubernetes_validate.__version__}, schemas of Kubernetes {versions}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
