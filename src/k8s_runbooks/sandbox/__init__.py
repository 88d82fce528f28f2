"""The sandbox cluster: a Kubernetes-API server on loopback whose pods are real local processes.

Never imported by flows, tasks or the core clients: they only see a kubeconfig.
"""
