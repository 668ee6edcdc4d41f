"""The Vertex dynamic provider, driven through the real google-cloud-aiplatform client (REST transport, anonymous
credentials) against the fake Vertex API in tests/fake_vertex.py on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import pickle
import stat
import subprocess
import sys
import threading
import typing
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dill
import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components import vertex_provider as vp
from components.vertex_provider import (
    BOOTSTRAP,
    LABEL_DEPLOYMENT,
    LABEL_SPEC,
    VertexDeploymentError,
    VertexModelDeploymentInputs,
    VertexModelDeploymentProvider,
    input_errors,
    spec_hash,
)
from tests.fake_vertex import FakeVertex, Fault, iter_strings

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # google-api-core nags about Python 3.11

HF_TOKEN = "hf_TESTTOKENabcdefghijklmnopqrstuvwxyz0123"
SECRET_VERSION = "projects/123456789012/secrets/vllm-hf-token/versions/1"
DIGEST_IMAGE = "us-central1-docker.pkg.dev/test-project/vllm/vllm-openai@sha256:" + "ab" * 32


@pytest.fixture
def fake() -> Iterator[FakeVertex]:
    with FakeVertex() as server:
        server.add_endpoint("1234567890")
        yield server


def provider_for(fake: FakeVertex) -> VertexModelDeploymentProvider:
    return VertexModelDeploymentProvider(api_endpoint=fake.url, anonymous=True, progress_interval=0.05)


def inputs(fake: FakeVertex, **overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "project": fake.project,
        "region": fake.region,
        "endpointName": f"{fake.location_path}/endpoints/1234567890",
        "deploymentKey": "test-vllm",
        "displayName": "vllm-gemma-4-e4b-it",
        "labels": {"vllm-gcp-stack": "test", "environment": "dev"},
        "imageUri": DIGEST_IMAGE,
        "vllmArgs": [
            "--model",
            "google/gemma-4-E4B-it",
            "--served-model-name",
            "gemma-4-e4b-it",
            "--port",
            "8000",
        ],
        "servedModelName": "gemma-4-e4b-it",
        "containerPort": 8000,
        "healthRoute": "/health",
        "invokeRoutePrefix": "/*",
        "sharedMemorySizeMb": 16384,
        "deploymentTimeoutSeconds": 1800,
        "machineType": "g2-standard-8",
        "acceleratorType": "NVIDIA_L4",
        "acceleratorCount": 1,
        "minReplicas": 1,
        "maxReplicas": 2,
        "spot": False,
        "targetWaitingRequests": 10,
        "serviceAccount": "vllm-vertex@test-project.iam.gserviceaccount.com",
        "hfTokenSecretVersion": SECRET_VERSION,
    }
    return props | overrides


def endpoint_of(fake: FakeVertex) -> str:
    return f"{fake.location_path}/endpoints/1234567890"


def labelled_models(fake: FakeVertex, key: str = "test-vllm") -> list[dict[str, Any]]:
    return [m for m in fake.models.values() if m.get("labels", {}).get(LABEL_DEPLOYMENT) == key]


# ---------------------------------------------------------------------------------------------------------------------
# create
# ---------------------------------------------------------------------------------------------------------------------
def test_create_uploads_the_vllm_container_and_deploys_it_with_all_traffic(fake: FakeVertex) -> None:
    props = inputs(fake)
    result = provider_for(fake).create(props)

    [upload] = fake.calls("uploadModel")
    spec = upload["body"]["model"]["containerSpec"]
    assert spec["imageUri"] == DIGEST_IMAGE
    assert spec["args"] == props["vllmArgs"]
    assert spec["command"] == ["python3", "-c", BOOTSTRAP]
    assert spec["ports"] == [{"containerPort": 8000}]
    assert spec["healthRoute"] == "/health"
    assert spec["invokeRoutePrefix"] == "/*"
    assert "predictRoute" not in spec  # Vertex accepts only one of predictRoute and invokeRoutePrefix
    assert spec["deploymentTimeout"] == "1800s"
    assert int(spec["sharedMemorySizeMb"]) == 16384
    assert spec["env"] == [{"name": "VLLM_GCP_HF_TOKEN_SECRET", "value": SECRET_VERSION}]
    labels = upload["body"]["model"]["labels"]
    assert labels[LABEL_DEPLOYMENT] == "test-vllm" and labels[LABEL_SPEC] == spec_hash(props)
    assert labels["environment"] == "dev"

    [deploy] = fake.calls("deployModel")
    deployed = deploy["body"]["deployedModel"]
    resources = deployed["dedicatedResources"]
    from google.cloud.aiplatform_v1.types import AcceleratorType

    assert resources["machineSpec"] == {
        "machineType": "g2-standard-8",
        "acceleratorType": AcceleratorType.NVIDIA_L4.value,  # the REST client sends enums as numbers
        "acceleratorCount": 1,
    }
    assert (resources["minReplicaCount"], resources["maxReplicaCount"]) == (1, 2)
    assert resources["autoscalingMetricSpecs"] == [
        {"metricName": "prometheus.googleapis.com/vertex_vllm_num_requests_waiting", "target": 10}
    ]
    assert resources.get("spot", False) is False
    assert deployed["serviceAccount"] == props["serviceAccount"]
    assert deploy["body"]["trafficSplit"] == {"0": 100}

    dm_id = result.outs["deployedModelId"]
    assert fake.traffic_split(endpoint_of(fake)) == {dm_id: 100}
    assert result.id == f"{endpoint_of(fake)}/deployments/test-vllm"
    assert result.outs["modelName"] in fake.models
    assert result.outs["trafficSplit"] == {dm_id: 100}
    assert {k: result.outs[k] for k in props} == props  # outputs keep the inputs: Pulumi diffs against them


def test_long_operations_are_polled_and_report_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "info", lambda message, *args, **kwargs: logged.append(message))
    with FakeVertex(operation_polls=1) as fake:
        fake.add_endpoint("1234567890")
        provider_for(fake).create(inputs(fake))
        polls = fake.calls("getOperation")
    assert len(polls) >= 2  # upload and deploy each answered done=false once, then were polled to completion
    assert "vertex: uploading the model: started (allowing up to 30 min)" in logged
    assert any(
        m.startswith("vertex: deploying projects/test-project/locations/us-central1/models/") for m in logged
    )
    assert not any("moving 100% of traffic" in m for m in logged)  # the first deploy already gets 100%


def test_progress_is_reported_while_waiting_and_the_budget_is_enforced() -> None:
    messages: list[str] = []
    gate = threading.Event()

    def slow() -> int:
        gate.wait(2)
        return 1

    with pytest.raises(TimeoutError, match="job did not finish within 0 s"):
        vp._wait_with_progress("job", slow, 0.1, 0.03, messages.append)
    gate.set()
    assert any("job: still running after" in m for m in messages)
    messages.clear()
    assert vp._wait_with_progress("job", lambda: 7, 5, 0.02, messages.append) == 7
    assert messages[-1].startswith("job: done after")


# ---------------------------------------------------------------------------------------------------------------------
# update: blue/green and in-place patch
# ---------------------------------------------------------------------------------------------------------------------
def test_update_of_the_model_deploys_beside_shifts_traffic_then_removes_the_old_model(
    fake: FakeVertex,
) -> None:
    provider = provider_for(fake)
    old = provider.create(inputs(fake)).outs
    old_dm, old_model = old["deployedModelId"], old["modelName"]
    fake.events.clear()

    news = inputs(fake, imageUri=DIGEST_IMAGE.replace("ab" * 32, "cd" * 32))
    diff = provider.diff("id", old, news)
    assert diff.changes and not diff.replaces  # same endpoint: an update, never a replacement
    new = provider.update("id", old, news).outs
    new_dm, new_model = new["deployedModelId"], new["modelName"]
    assert new_dm != old_dm and new_model != old_model

    splits = [detail for name, detail in fake.events if name == "trafficSplit"]
    assert splits == [
        {old_dm: 100, new_dm: 0},  # 1. new model deployed beside the old one, no traffic yet
        {new_dm: 100},  # 2. all traffic moved once the new one is deployed (healthy)
        {new_dm: 100},  # 3. old one undeployed; the split stays on the new model
    ]
    names = fake.event_names()
    assert names.index("deployModel") < names.index("trafficSplit", names.index("deployModel") + 1)
    shift = len(names) - 1 - names[::-1].index("trafficSplit") - 1  # the shift precedes the undeploy's split
    assert names.index("undeployModel") > shift
    assert ("deleteModel", old_model) in fake.events
    assert names.index("deleteModel") > names.index("undeployModel")  # deleted only after traffic moved
    assert fake.deployed_ids(endpoint_of(fake)) == [new_dm]
    assert set(fake.models) == {new_model}
    assert new["trafficSplit"] == {new_dm: 100}


def test_replica_only_update_patches_the_deployment_without_redeploying(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    old = provider.create(inputs(fake)).outs
    before = list(fake.requests)
    news = inputs(fake, minReplicas=2, maxReplicas=4, targetWaitingRequests=5)

    diff = provider.diff("id", old, news)
    assert diff.changes and not diff.replaces
    new = provider.update("id", old, news).outs

    during = fake.requests[len(before) :]
    methods = {r["method"] for r in during}
    assert {"uploadModel", "deployModel", "undeployModel", "deleteModel"}.isdisjoint(methods)
    [mutate] = [r for r in during if r["method"] == "mutateDeployedModel"]
    assert mutate["body"]["deployedModel"]["id"] == old["deployedModelId"]
    [dm] = fake.endpoints[endpoint_of(fake)]["deployedModels"]
    assert (dm["dedicatedResources"]["minReplicaCount"], dm["dedicatedResources"]["maxReplicaCount"]) == (
        2,
        4,
    )
    assert dm["dedicatedResources"]["autoscalingMetricSpecs"][0]["target"] == 5
    assert new["deployedModelId"] == old["deployedModelId"] and new["modelName"] == old["modelName"]


def test_label_only_update_patches_the_model_metadata(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    old = provider.create(inputs(fake)).outs
    news = inputs(fake, labels={"vllm-gcp-stack": "test", "environment": "staging"})
    provider.update("id", old, news)
    [(_, detail)] = [e for e in fake.events if e[0] == "updateModel"]
    assert detail[0] == old["modelName"]
    assert fake.models[old["modelName"]]["labels"]["environment"] == "staging"
    assert fake.models[old["modelName"]]["labels"][LABEL_DEPLOYMENT] == "test-vllm"  # identity label kept
    assert not fake.calls("deployModel")[1:]


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("imageUri", DIGEST_IMAGE.replace("ab" * 32, "ef" * 32), "redeploy"),
        ("vllmArgs", ["--model", "google/gemma-4-E4B-it", "--max-model-len", "4096"], "redeploy"),
        ("machineType", "g2-standard-12", "redeploy"),
        ("acceleratorCount", 2, "redeploy"),
        ("spot", True, "redeploy"),
        ("hfTokenSecretVersion", SECRET_VERSION.replace("/1", "/2"), "redeploy"),
        ("minReplicas", 2, "patch"),
        ("targetWaitingRequests", 20, "patch"),
        ("labels", {"a": "b"}, "metadata"),
        ("endpointName", "projects/test-project/locations/us-central1/endpoints/99", "replace"),
        ("deploymentKey", "other", "replace"),
    ],
)
def test_diff_classifies_each_change(fake: FakeVertex, key: str, value: Any, kind: str) -> None:
    olds, news = inputs(fake), inputs(fake, **{key: value})
    diff = provider_for(fake).diff("id", olds, news)
    assert diff.changes
    assert diff.replaces == ([key] if kind == "replace" else [])
    assert (key in vp.REDEPLOY_KEYS) == (kind == "redeploy")
    assert (key in vp.PATCH_KEYS) == (kind == "patch")
    assert provider_for(fake).diff("id", olds, inputs(fake)).changes is False
    assert spec_hash(news) != spec_hash(olds) if kind == "redeploy" else spec_hash(news) == spec_hash(olds)


# ---------------------------------------------------------------------------------------------------------------------
# delete
# ---------------------------------------------------------------------------------------------------------------------
def test_delete_undeploys_then_deletes_the_model(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    outs = provider.create(inputs(fake)).outs
    fake.events.clear()
    provider.delete("id", outs)
    assert fake.event_names() == ["trafficSplit", "undeployModel", "deleteModel"]
    assert fake.traffic_split(endpoint_of(fake)) == {}
    assert fake.models == {} and fake.deployed_ids(endpoint_of(fake)) == []
    provider.delete("id", outs)  # idempotent: nothing left to remove is not an error


def test_delete_after_an_interrupted_update_removes_both_deployments(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    old = provider.create(inputs(fake)).outs
    news = inputs(fake, imageUri=DIGEST_IMAGE.replace("ab" * 32, "cd" * 32))
    fake.inject(Fault("updateEndpoint", "UNAVAILABLE", "connection reset"))  # dies before the traffic shift
    with pytest.raises(VertexDeploymentError):
        provider.update("id", old, news)
    assert len(fake.deployed_ids(endpoint_of(fake))) == 2
    provider.delete("id", old)
    assert fake.models == {} and fake.deployed_ids(endpoint_of(fake)) == []


# ---------------------------------------------------------------------------------------------------------------------
# resumability
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "faults",
    [
        # The run dies right after the upload operation finished: the client never reads the new model back.
        # (504: the client retries 500/503 reads for two minutes, but not a timeout.)
        [Fault("getModel", "DEADLINE_EXCEEDED", "connection timed out")],
        # The deploy fails and so does the clean-up that would delete the uploaded model.
        [
            Fault("deployModel", "UNAVAILABLE", "backend error"),
            Fault("deleteModel", "UNAVAILABLE", "backend error"),
        ],
    ],
    ids=["crash-after-upload", "deploy-and-cleanup-fail"],
)
def test_create_retried_after_a_failure_between_upload_and_deploy_adopts_the_model(
    fake: FakeVertex, faults: list[Fault]
) -> None:
    provider = provider_for(fake)
    for fault in faults:
        fake.inject(fault)
    with pytest.raises(VertexDeploymentError):
        provider.create(inputs(fake))
    assert len(labelled_models(fake)) == 1  # the failed run left its uploaded model behind
    assert fake.deployed_ids(endpoint_of(fake)) == []

    outs = provider.create(inputs(fake)).outs  # `pulumi up` again

    assert len(fake.calls("uploadModel")) == 1  # adopted, not uploaded twice
    [model] = labelled_models(fake)
    assert outs["modelName"] == model["name"]
    assert fake.deployed_ids(endpoint_of(fake)) == [outs["deployedModelId"]]
    assert fake.traffic_split(endpoint_of(fake)) == {outs["deployedModelId"]: 100}


def test_create_retried_after_the_deploy_finished_adopts_the_deployment(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    first = provider.create(inputs(fake)).outs  # as if Pulumi died before saving this result
    again = provider.create(inputs(fake)).outs
    assert again["deployedModelId"] == first["deployedModelId"]
    assert len(fake.calls("uploadModel")) == 1 and len(fake.calls("deployModel")) == 1


def test_create_removes_a_stale_model_left_by_an_older_spec(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    old_image = DIGEST_IMAGE.replace("ab" * 32, "00" * 32)
    fake.inject(Fault("getModel", "DEADLINE_EXCEEDED", "connection timed out"))
    with pytest.raises(VertexDeploymentError):
        provider.create(inputs(fake, imageUri=old_image))
    outs = provider.create(inputs(fake)).outs
    assert [m["name"] for m in labelled_models(fake)] == [outs["modelName"]]


# ---------------------------------------------------------------------------------------------------------------------
# errors from Google: one clear message, nothing left behind
# ---------------------------------------------------------------------------------------------------------------------
QUOTA = (
    "The following quota metrics exceed quota limits: "
    "aiplatform.googleapis.com/custom_model_serving_nvidia_l4_gpus"
)


@pytest.mark.parametrize("in_operation", [True, False], ids=["failed-operation", "http-429"])
def test_quota_error_on_deploy_gives_one_clear_message_and_leaves_nothing(
    fake: FakeVertex, in_operation: bool
) -> None:
    fake.inject(Fault("deployModel", "RESOURCE_EXHAUSTED", QUOTA, in_operation=in_operation))
    with pytest.raises(VertexDeploymentError) as caught:
        provider_for(fake).create(inputs(fake))
    message = str(caught.value)
    assert "quota exhausted" in message and QUOTA in message  # the cause, with Google's own words
    assert "Fix: request more 'Custom model serving NVIDIA_L4' quota in us-central1" in message  # the fix
    assert "Nothing was left behind" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained stack trace
    assert fake.models == {} and fake.deployed_ids(endpoint_of(fake)) == []


def test_failed_blue_green_update_keeps_the_old_model_serving(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    old = provider.create(inputs(fake)).outs
    fake.inject(
        Fault("deployModel", "RESOURCE_EXHAUSTED", "stockout: not enough resources", in_operation=True)
    )
    with pytest.raises(VertexDeploymentError, match="no capacity"):
        provider.update("id", old, inputs(fake, machineType="g2-standard-12"))
    assert fake.traffic_split(endpoint_of(fake)) == {old["deployedModelId"]: 100}
    assert set(fake.models) == {old["modelName"]}


@pytest.mark.parametrize(
    ("status", "message", "cause", "fix"),
    [
        ("RESOURCE_EXHAUSTED", QUOTA, "quota exhausted", "request more"),
        ("UNAVAILABLE", "The zone does not have enough resources available", "no capacity", "another region"),
        (
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.actAs' denied",
            "permission denied",
            "roles/iam",
        ),
        ("DEADLINE_EXCEEDED", "Model server never became ready", "timed out", "container logs"),
    ],
)
def test_google_errors_become_cause_and_fix(
    fake: FakeVertex, status: str, message: str, cause: str, fix: str
) -> None:
    fake.inject(Fault("deployModel", status, message, in_operation=True))
    with pytest.raises(VertexDeploymentError) as caught:
        provider_for(fake).create(inputs(fake))
    text = str(caught.value)
    assert cause in text and fix in text and message in text
    assert fake.models == {}


def test_errors_outside_a_deploy_are_explained_too(fake: FakeVertex) -> None:
    with pytest.raises(VertexDeploymentError, match=r"not found .*Fix: check that .*endpoints/404 exists"):
        provider_for(fake).create(inputs(fake, endpointName=f"{fake.location_path}/endpoints/404"))


# ---------------------------------------------------------------------------------------------------------------------
# input schema and checks
# ---------------------------------------------------------------------------------------------------------------------
def test_input_schema_is_declared_and_matches_what_the_provider_reads(fake: FakeVertex) -> None:
    hints = typing.get_type_hints(VertexModelDeploymentInputs)
    assert set(inputs(fake)) == set(hints)
    assert VertexModelDeploymentInputs.__optional_keys__ == {"hfTokenSecretVersion"}
    assert hints["vllmArgs"] == list[str] and hints["minReplicas"] is int and hints["spot"] is bool
    assert input_errors(inputs(fake)) == []
    assert set(vp.REDEPLOY_KEYS) | set(vp.PATCH_KEYS) | set(vp.METADATA_KEYS) | set(vp.REPLACE_KEYS) == set(
        hints
    )


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"imageUri": "vllm/vllm-openai:v0.33.0"}, "imageUri", "not an Artifact Registry image by digest"),
        ({"acceleratorType": "nvidia-l4"}, "acceleratorType", "use one of NVIDIA_L4"),
        ({"minReplicas": 3, "maxReplicas": 2}, "maxReplicas", "is below minReplicas 3"),
        ({"deploymentTimeoutSeconds": 9000}, "deploymentTimeoutSeconds", "between 60 and 7200"),
        ({"hfTokenSecretVersion": HF_TOKEN}, "hfTokenSecretVersion", "never the token itself"),
        ({"vllmArgs": ["--hf-token", HF_TOKEN]}, "vllmArgs", "looks like a Hugging Face token"),
        ({"deploymentKey": "Prod.Stack"}, "deploymentKey", "not a valid label value"),
        ({"minReplicas": "2"}, "minReplicas", "'2' is a str; it must be a int"),
        ({"typo": 1}, "typo", "not an input of VertexModelDeployment"),
        ({"region": "europe-west4"}, "region", "differs from the endpoint's us-central1"),
    ],
)
def test_check_rejects_bad_inputs_naming_key_value_and_fix(
    fake: FakeVertex, overrides: dict[str, Any], key: str, fragment: str
) -> None:
    result = provider_for(fake).check({}, inputs(fake, **overrides))
    reasons = {f.property: f.reason for f in result.failures}
    assert key in reasons and fragment in reasons[key], reasons


def test_check_skips_values_unknown_during_preview(fake: FakeVertex) -> None:
    unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
    assert provider_for(fake).check({}, inputs(fake, imageUri=unknown, endpointName=unknown)).failures == []


# ---------------------------------------------------------------------------------------------------------------------
# secrets and serialization
# ---------------------------------------------------------------------------------------------------------------------
def test_hf_token_is_absent_from_everything_the_provider_returns_and_stores(fake: FakeVertex) -> None:
    provider = provider_for(fake)
    outs = provider.create(inputs(fake)).outs
    outs = provider.update("id", outs, inputs(fake, imageUri=DIGEST_IMAGE.replace("ab" * 32, "cd" * 32))).outs
    serialized = serialize_provider(provider)
    texts = [*iter_strings(outs), base64.b64decode(serialized).decode("latin-1"), fake.everything_stored()]
    assert all(HF_TOKEN not in text for text in texts)
    assert SECRET_VERSION in fake.everything_stored()  # the name of the secret travels, never its value


def test_provider_pickles_by_reference_and_small(fake: FakeVertex) -> None:
    provider = VertexModelDeploymentProvider()
    raw = base64.b64decode(serialize_provider(provider))
    assert b"components.vertex_provider" in raw and b"VertexModelDeploymentProvider" in raw
    assert b"_roll_out" not in raw and b"BOOTSTRAP" not in raw  # no code by value
    assert len(raw) < 1000
    restored = dill.loads(raw)
    assert type(restored) is VertexModelDeploymentProvider
    assert restored.api_endpoint is None and restored.anonymous is False
    assert pickle.loads(raw).progress_interval == 60.0


def test_importing_the_provider_does_not_import_aiplatform() -> None:
    code = (
        "import sys, components.vertex_provider as v; v.VertexModelDeploymentProvider();"
        "print('google.cloud.aiplatform' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------------
# the container entrypoint, for real: python3 -c BOOTSTRAP against a fake metadata server and Secret Manager
# ---------------------------------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


class _SecretServer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: typing.ClassVar[list[tuple[str, str | None]]] = []
    deny = False

    def do_GET(self) -> None:
        self.seen.append(
            (self.path, self.headers.get("Authorization") or self.headers.get("Metadata-Flavor"))
        )
        if self.path.endswith("/service-accounts/default/token"):
            body: dict[str, Any] = {"access_token": "ya29.fake", "expires_in": 3600}
            status = 200
        elif self.path == f"/v1/{SECRET_VERSION}:access" and not self.deny:
            body = {"payload": {"data": base64.b64encode(HF_TOKEN.encode()).decode()}}
            status = 200
        else:
            body, status = {"error": {"code": 403, "message": "denied"}}, 403
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def secret_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SecretServer)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    _SecretServer.seen.clear()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _run_bootstrap(tmp_path: Path, host: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "vllm"  # stands in for the image's `vllm` CLI: records its argv and environment
    stub.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv, 'hf': os.environ.get('HF_TOKEN')}}, open({str(tmp_path / 'out.json')!r}, 'w'))\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "GCE_METADATA_HOST": host,
        "VLLM_GCP_SECRET_MANAGER_URL": f"http://{host}",
        "VLLM_GCP_RETRY_DELAY_SECONDS": "0",
    }
    if secret:
        env["VLLM_GCP_HF_TOKEN_SECRET"] = secret
    args = ["--model", "google/gemma-4-E4B-it", "--port", "8000"]
    return subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_bootstrap_reads_the_token_from_secret_manager_into_vllms_env_only(
    tmp_path: Path, secret_server: str
) -> None:
    done = _run_bootstrap(tmp_path, secret_server, SECRET_VERSION)
    assert done.returncode == 0, done.stderr
    seen = json.loads((tmp_path / "out.json").read_text())
    assert seen["argv"][1:] == ["serve", "--model", "google/gemma-4-E4B-it", "--port", "8000"]
    assert seen["hf"] == HF_TOKEN
    assert HF_TOKEN not in done.stdout + done.stderr  # never logged
    assert ("/computeMetadata/v1/instance/service-accounts/default/token", "Google") in _SecretServer.seen
    assert (f"/v1/{SECRET_VERSION}:access", "Bearer ya29.fake") in _SecretServer.seen
    assert "$(" not in BOOTSTRAP  # Vertex would try to expand it in the container command


def test_bootstrap_fails_loudly_when_the_secret_cannot_be_read(tmp_path: Path, secret_server: str) -> None:
    _SecretServer.deny = True
    try:
        done = _run_bootstrap(tmp_path, secret_server, SECRET_VERSION)
    finally:
        _SecretServer.deny = False
    assert done.returncode != 0
    assert "roles/secretmanager.secretAccessor" in done.stderr
    assert not (tmp_path / "out.json").exists()  # vllm never started


def test_bootstrap_without_a_secret_just_starts_vllm(tmp_path: Path, secret_server: str) -> None:
    done = _run_bootstrap(tmp_path, secret_server, None)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out.json").read_text())["hf"] is None
    assert _SecretServer.seen == []


def test_replacement_on_another_endpoint_leaves_the_old_endpoints_model_to_its_own_delete(
    fake: FakeVertex,
) -> None:
    # Pulumi replaces create-before-delete: the new deployment (endpoint B) exists while the old one (A) still serves.
    provider = provider_for(fake)
    endpoint_b = fake.add_endpoint("2222222222")
    old = provider.create(inputs(fake)).outs
    new = provider.create(
        inputs(fake, endpointName=endpoint_b, imageUri=DIGEST_IMAGE.replace("ab" * 32, "cd" * 32))
    ).outs
    assert set(fake.models) == {old["modelName"], new["modelName"]}  # A's model survived B's roll-out
    provider.delete("id", old)
    assert set(fake.models) == {new["modelName"]}  # A's delete removed A's model only
    assert fake.deployed_ids(endpoint_b) == [new["deployedModelId"]]
