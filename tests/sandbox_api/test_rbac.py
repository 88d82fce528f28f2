"""RBAC in the sandbox API, as kube-apiserver enforces it: the shipped rbac.yaml applied as-is, ServiceAccount
tokens from the TokenRequest API, Forbidden Status messages word for word, impersonation and `kubectl auth can-i`."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from k8s_runbooks.sandbox import identities
from tests.sandbox_api.conftest import Cluster

def _message(exc: ApiException) -> str:
    return json.loads(exc.body)["message"]


RUNBOOKS = "system:serviceaccount:k8s-runbooks:k8s-runbooks"
WORKER = "system:serviceaccount:k8s-runbooks:k8s-runbooks-worker"


@pytest.fixture(scope="module")
def shipped(cluster: Cluster) -> Cluster:
    identities.apply_shipped_rbac(cluster.url)
    return cluster


@pytest.fixture(scope="module")
def as_runbooks(shipped: Cluster) -> client.ApiClient:
    path = identities.service_account_kubeconfig(shipped.url, shipped.state_dir)
    return config.new_client_from_config(str(path))


def test_a_service_account_gets_what_its_role_grants_and_a_real_forbidden_otherwise(as_runbooks: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(as_runbooks), client.AppsV1Api(as_runbooks)
    core.list_namespaced_pod("shop")  # granted by the Role in shop
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_pod("default")
    assert denied.value.status == 403
    assert ('pods is forbidden: User "system:serviceaccount:k8s-runbooks:k8s-runbooks" cannot list resource "pods" '
            'in API group "" in the namespace "default"') in _message(denied.value)
    with pytest.raises(ApiException) as denied:
        apps.delete_namespaced_deployment("checkout", "shop")
    assert ('deployments.apps "checkout" is forbidden: User "system:serviceaccount:k8s-runbooks:k8s-runbooks" cannot '
            'delete resource "deployments" in API group "apps" in the namespace "shop"') in _message(denied.value)
    with pytest.raises(ApiException) as denied:
        core.list_namespace()
    assert ('namespaces is forbidden: User "system:serviceaccount:k8s-runbooks:k8s-runbooks" cannot list resource '
            '"namespaces" in API group "" at the cluster scope') in _message(denied.value)
    assert core.read_namespace("shop").metadata.name == "shop"  # the ClusterRole's get


def test_bad_tokens_are_unauthorized(shipped: Cluster) -> None:
    import httpx

    resp = httpx.get(f"{shipped.url}/api/v1/namespaces/shop/pods", headers={"Authorization": "Bearer forged.token.x"},
                     timeout=5)
    assert resp.status_code == 401 and resp.json()["reason"] == "Unauthorized"


def test_kubectl_auth_can_i_answers_for_the_shipped_accounts(shipped: Cluster) -> None:
    def can_i(*args: str) -> str:
        out = shipped.kubectl("auth", "can-i", *args, check=False)
        return out.stdout.strip()

    assert can_i("delete", "pods", "-n", "shop", f"--as={RUNBOOKS}") == "yes"
    assert can_i("delete", "pods", "-n", "default", f"--as={RUNBOOKS}") == "no"
    assert can_i("patch", "deployments.apps", "-n", "shop", f"--as={RUNBOOKS}") == "yes"
    assert can_i("update", "leases.coordination.k8s.io", "-n", "shop", f"--as={RUNBOOKS}") == "yes"
    assert can_i("get", "secrets", "-n", "shop", f"--as={RUNBOOKS}") == "no"
    assert can_i("create", "jobs.batch", "-n", "k8s-runbooks", f"--as={WORKER}") == "yes"
    assert can_i("create", "jobs.batch", "-n", "shop", f"--as={WORKER}") == "no"
    assert can_i("delete", "pods", "-n", "shop", f"--as={WORKER}") == "no"
    assert can_i("get", "pods", "-n", "shop", "--as=system:serviceaccount:k8s-runbooks:k8s-runbooks-receiver") == "no"
    assert can_i("delete", "deployments", "-n", "shop") == "yes"  # the admin
    listing = shipped.kubectl("get", "pods", "-n", "default", f"--as={RUNBOOKS}", check=False)
    assert listing.returncode == 1
    assert ('pods is forbidden: User "system:serviceaccount:k8s-runbooks:k8s-runbooks" cannot list resource "pods" in '
            'API group "" in the namespace "default"') in listing.stderr


def test_subject_access_review_and_impersonation_need_permission(shipped: Cluster, as_runbooks: client.ApiClient) -> None:
    review = client.AuthorizationV1Api(config.new_client_from_config(str(shipped.kubeconfig)))
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": RUNBOOKS, "resourceAttributes": {"namespace": "shop", "verb": "get", "resource": "pods",
                                                              "subresource": "log"}}}
    answer = review.create_subject_access_review(body)
    assert answer.status.allowed and 'RoleBinding "k8s-runbooks/shop"' in answer.status.reason
    # The runbooks' account may neither review others nor impersonate: RBAC escalation is not in its rules.
    with pytest.raises(ApiException) as denied:
        client.AuthorizationV1Api(as_runbooks).create_subject_access_review(body)
    assert denied.value.status == 403 and 'cannot create resource "subjectaccessreviews"' in _message(denied.value)
    as_runbooks.default_headers["Impersonate-User"] = "system:admin"
    try:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_runbooks).list_namespaced_pod("shop")
        assert ('users "system:admin" is forbidden: User "system:serviceaccount:k8s-runbooks:k8s-runbooks" cannot '
                'impersonate resource "users" in API group "" at the cluster scope') in _message(denied.value)
    finally:
        del as_runbooks.default_headers["Impersonate-User"]
    # Its own question about itself is always allowed (system:basic-user), and answered from the same rules.
    mine = client.AuthorizationV1Api(as_runbooks).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"namespace": "shop", "verb": "delete", "resource": "pods"}}})
    assert mine.status.allowed


def test_a_deleted_service_account_takes_its_tokens_with_it(shipped: Cluster) -> None:
    admin = client.CoreV1Api(config.new_client_from_config(str(shipped.kubeconfig)))
    admin.create_namespaced_service_account("k8s-runbooks", {"metadata": {"name": "short-lived"}})
    path = identities.service_account_kubeconfig(shipped.url, shipped.state_dir, name="short-lived")
    mine = client.AuthorizationV1Api(config.new_client_from_config(str(path)))
    assert mine.create_self_subject_access_review(
        {"spec": {"nonResourceAttributes": {"path": "/api", "verb": "get"}}}).status.allowed
    admin.delete_namespaced_service_account("short-lived", "k8s-runbooks")
    with pytest.raises(ApiException) as gone:
        mine.create_self_subject_access_review({"spec": {"nonResourceAttributes": {"path": "/api", "verb": "get"}}})
    assert gone.value.status == 401
