"""ZTDP's Kubernetes provider (entry point `ztdp.providers: kubernetes`)."""

from ztdp_kubernetes.provider import KubernetesProvider, manifests

__all__ = ["KubernetesProvider", "manifests"]
