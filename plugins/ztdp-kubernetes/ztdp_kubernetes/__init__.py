"""ZTDP's Kubernetes provider (entry point `ztdp.providers: kubernetes`)."""

from ztdp_kubernetes.provider import KubernetesProvider, manifests, object_name

__all__ = ["KubernetesProvider", "manifests", "object_name"]
