"""The recording mocks fill computed outputs in the providers' real formats and keep secrets marked."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp
import pytest

from components.mocks import PLACEHOLDER_DIGEST, compute_collection, redact, resolve, run_program


@pytest.mark.parametrize(
    ("kind", "collection"),
    [
        ("URLMap", "urlMaps"),
        ("SSLPolicy", "sslPolicies"),
        ("TargetHttpsProxy", "targetHttpsProxies"),
        ("GlobalForwardingRule", "forwardingRules"),
        ("GlobalAddress", "addresses"),
        ("RegionInstanceGroupManager", "instanceGroupManagers"),
        ("ManagedSslCertificate", "sslCertificates"),
        ("BackendService", "backendServices"),
        ("HealthCheck", "healthChecks"),
    ],
)
def test_compute_collections_follow_the_compute_api(kind: str, collection: str) -> None:
    assert compute_collection(kind) == collection


def test_redact_marks_secrets_unknowns_and_provider_blobs() -> None:
    wire = {
        "a": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": "hf_x"},
        "b": "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "c": [1.0, 2.5],
        "__provider": "gASV...pickled",
    }
    assert redact(wire) == {
        "a": "[secret]",
        "b": "[unknown]",
        "c": [1, 2.5],
        "__provider": "[dynamic provider]",
    }


def test_recorded_inputs_keep_secrets_secret_and_outputs_are_concrete(mocks) -> None:
    made: dict[str, pulumi.Output] = {}

    def program() -> None:
        sa = gcp.serviceaccount.Account("sa", account_id="vllm-vm", project="test-project")
        secret = gcp.secretmanager.Secret(
            "s", secret_id="tok", replication={"auto": {}}, project="test-project"
        )
        gcp.secretmanager.SecretVersion(
            "v", secret=secret.id, secret_data=pulumi.Output.secret("hf_TOPSECRET")
        )
        made["email"], made["secret"] = sa.email, secret.name

    run_program(program)
    version = next(r for r in mocks.resources if r.name == "v")
    assert version.inputs["secretData"] == "[secret]"
    assert "hf_TOPSECRET" not in str([r.as_dict() for r in mocks.resources])
    assert resolve(made["email"]) == "vllm-vm@test-project.iam.gserviceaccount.com"
    assert resolve(made["secret"]).startswith("projects/") and resolve(made["secret"]).endswith(
        "/secrets/tok"
    )
    assert PLACEHOLDER_DIGEST == "sha256:" + "0" * 64


def test_package_exports_load_lazily_and_match_the_list() -> None:
    import components

    assert set(components.__all__) == set(components._EXPORTS)
    for name in components.__all__:
        assert getattr(components, name).__name__ == name
    with pytest.raises(AttributeError):
        _ = components.NotAThing


def test_component_outputs_are_recorded(mocks) -> None:
    class Thing(pulumi.ComponentResource):
        def __init__(self, name: str) -> None:
            super().__init__("test:index:Thing", name)
            self.register_outputs({"answer": 42, "token": pulumi.Output.secret("shh")})

    run_program(lambda: Thing("t"))
    (outputs,) = [v for k, v in mocks.component_outputs.items() if k.endswith("::t")]
    assert outputs == {"answer": 42, "token": "[secret]"}
