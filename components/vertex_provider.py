"""`VertexModelDeployment`: a Pulumi dynamic resource that uploads the vLLM container as a Vertex AI Model and deploys
it to an existing endpoint, with blue/green updates that keep the endpoint (and its URL) in place.

Why a dynamic provider: pulumi-gcp has no resource that deploys a Model to an existing endpoint
(hashicorp/terraform-provider-google#15303), and `AiEndpointWithModelGardenDeployment` replaces the endpoint on any
change, which changes its URL and drops traffic.

Serialization (what Pulumi pickles into state): Pulumi serializes the *provider instance* with dill into the
`__provider` property. dill pickles a class that lives in an importable module by reference, so state holds only
`components.vertex_provider.VertexModelDeploymentProvider` plus the instance's attributes (no code, no credentials);
the `components` package must therefore be importable where the provider runs (the project directory, or `pip install`).
Importing this module must stay cheap and side-effect free (pulumi/pulumi#7453): google-cloud-aiplatform (~2.5 s,
~190 MB) is imported inside the provider's methods only.

Secrets: the provider never sees the Hugging Face token. It receives the Secret Manager *version name*
(`hfTokenSecretVersion`), which it hands to the container as an environment variable; the container's entrypoint
(`BOOTSTRAP`) reads the token at start with the deployed model's service account and execs `vllm serve`. Vertex stores
container env vars in plaintext on the Model resource, so the token itself must never go there.

Resumability: the Model carries two labels, `vllm-gcp-deployment` (which deployment it belongs to) and `vllm-gcp-spec`
(a hash of everything that needs a redeploy). Create and update both run one convergent roll-out (`_roll_out`): find or
upload the target model, deploy it beside whatever serves now, move 100% of traffic to it, then undeploy and delete every
other model of this deployment. Re-running it after a failure at any step finishes the job instead of duplicating it.
"""

import concurrent.futures
import hashlib
import json
import re
import time
import typing
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict, TypeVar

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

LABEL_DEPLOYMENT = "vllm-gcp-deployment"
LABEL_SPEC = "vllm-gcp-spec"
HF_TOKEN_SECRET_ENV = "VLLM_GCP_HF_TOKEN_SECRET"
# Vertex caps a model container's deployment timeout at 2 hours.
MAX_DEPLOYMENT_TIMEOUT_SECONDS = 7200
# Extra time on top of the container's deployment timeout for Vertex to provision the replicas.
PROVISIONING_MARGIN_SECONDS = 900
VERTEX_ACCELERATORS = (
    "NVIDIA_L4",
    "NVIDIA_TESLA_A100",
    "NVIDIA_A100_80GB",
    "NVIDIA_H100_80GB",
    "NVIDIA_H100_MEGA_80GB",
    "NVIDIA_H200_141GB",
    "NVIDIA_RTX_PRO_6000",
)
# pulumi.runtime.rpc.UNKNOWN: a value known only after apply (skipped by the checks).
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_LABEL_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ARTIFACT_REGISTRY_DIGEST_RE = re.compile(r"^[a-z0-9-]+-docker\.pkg\.dev/[^@\s]+@sha256:[0-9a-f]{64}$")
_SECRET_VERSION_RE = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")
_ENDPOINT_RE = re.compile(r"^projects/[^/]+/locations/(?P<region>[^/]+)/endpoints/[^/]+$")
_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{20,}")


class VertexModelDeploymentInputs(TypedDict):
    """The dynamic resource's input schema: these camelCase keys, exactly, as registered and stored in state.

    Read it with `typing.get_type_hints(VertexModelDeploymentInputs)` (key -> type) and
    `VertexModelDeploymentInputs.__required_keys__` / `__optional_keys__`; `input_errors()` applies the value rules.
    """

    project: str
    region: str
    endpointName: str  # projects/{project}/locations/{region}/endpoints/{id}: the endpoint Pulumi manages
    deploymentKey: str  # label value naming this deployment (stack + component), [a-z0-9_-]{1,63}
    displayName: str
    labels: dict[str, str]
    imageUri: str  # Artifact Registry by digest: REGION-docker.pkg.dev/PROJECT/REPO/IMAGE@sha256:...
    vllmArgs: list[str]  # the arguments after `vllm serve`
    servedModelName: str
    containerPort: int
    healthRoute: str
    invokeRoutePrefix: str  # "/*": the only value Vertex allows; exposes the OpenAI routes under .../invoke/
    sharedMemorySizeMb: int
    deploymentTimeoutSeconds: int  # from the capacity planner's startup budget
    machineType: str
    acceleratorType: str  # a Vertex AcceleratorType enum name, e.g. NVIDIA_A100_80GB
    acceleratorCount: int
    minReplicas: int
    maxReplicas: int
    spot: bool
    targetWaitingRequests: int  # autoscaling target on vLLM's num_requests_waiting, per replica
    serviceAccount: str  # email of the service account the container runs as
    hfTokenSecretVersion: NotRequired[str]  # projects/P/secrets/S/versions/V (a name, never the token)


# Changing one of these means another endpoint or another deployment identity: a new resource.
REPLACE_KEYS = ("project", "region", "endpointName", "deploymentKey")
# Changing one of these is patched in place on the running deployment (mutateDeployedModel): no redeploy.
PATCH_KEYS = ("minReplicas", "maxReplicas", "targetWaitingRequests")
# Changing one of these only updates the Model's metadata.
METADATA_KEYS = ("displayName", "labels")
# Everything else needs a new Model and deployment (blue/green).
REDEPLOY_KEYS = tuple(
    k
    for k in VertexModelDeploymentInputs.__annotations__
    if k not in REPLACE_KEYS + PATCH_KEYS + METADATA_KEYS
)

# The container entrypoint. It runs as `python3 -c BOOTSTRAP <vllm args>`: it reads the HF token from Secret Manager
# with the deployed model's service account (metadata-server token + Secret Manager REST, like the GCE startup script),
# puts it in HF_TOKEN for this process only, and execs `vllm serve`. It contains no "$(": Vertex expands $(VAR) in
# command and args (ModelContainerSpec.command docs).
BOOTSTRAP = """\
import base64, json, os, sys, time, urllib.request
secret = os.environ.get("VLLM_GCP_HF_TOKEN_SECRET", "")
if secret:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    api = os.environ.get("VLLM_GCP_SECRET_MANAGER_URL", "https://secretmanager.googleapis.com")
    delay = float(os.environ.get("VLLM_GCP_RETRY_DELAY_SECONDS", "2"))
    for attempt in range(5):
        try:
            req = urllib.request.Request("http://" + host + "/computeMetadata/v1/instance/service-accounts/default/token",
                                         headers={"Metadata-Flavor": "Google"})
            bearer = json.load(urllib.request.urlopen(req, timeout=10))["access_token"]
            req = urllib.request.Request(api + "/v1/" + secret + ":access", headers={"Authorization": "Bearer " + bearer})
            data = json.load(urllib.request.urlopen(req, timeout=10))["payload"]["data"]
            os.environ["HF_TOKEN"] = base64.b64decode(data).decode()
            break
        except Exception as err:
            print("vllm-gcp: reading %s failed (attempt %d/5): %s" % (secret, attempt + 1, err), file=sys.stderr, flush=True)
            time.sleep(delay * 2 ** attempt)
    else:
        sys.exit("vllm-gcp: cannot read the HF token from " + secret + ". Grant the deployed model's service account "
                 "roles/secretmanager.secretAccessor on that secret.")
print("vllm-gcp: starting vllm serve", flush=True)
os.execvp("vllm", ["vllm", "serve"] + sys.argv[1:])
"""


class VertexDeploymentError(Exception):
    """A Vertex AI failure, said once: what happened, why, and what to do."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers (no Google imports)
# ---------------------------------------------------------------------------------------------------------------------
def spec_hash(props: dict[str, Any]) -> str:
    """A short, stable hash of everything that needs a redeploy: the `vllm-gcp-spec` label of a Model."""
    spec = {k: props.get(k) for k in REDEPLOY_KEYS}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def model_labels(props: dict[str, Any]) -> dict[str, str]:
    return {**props.get("labels", {}), LABEL_DEPLOYMENT: props["deploymentKey"], LABEL_SPEC: spec_hash(props)}


def container_env(props: dict[str, Any]) -> dict[str, str]:
    secret = props.get("hfTokenSecretVersion")
    return {HF_TOKEN_SECRET_ENV: secret} if secret else {}


def deployment_id(props: dict[str, Any]) -> str:
    """The resource id: stable across blue/green updates (the deployed model id is not)."""
    return f"{props['endpointName']}/deployments/{props['deploymentKey']}"


def autoscaling_target(props: dict[str, Any]) -> int:
    return max(1, round(props["targetWaitingRequests"]))


def _type_name(tp: Any) -> type:
    origin = typing.get_origin(tp)
    return origin if isinstance(origin, type) else tp


def input_errors(props: dict[str, Any]) -> list[tuple[str, str]]:
    """(property, message) for every bad input; each message names the value and the fix. Unknowns are skipped."""
    errors: list[tuple[str, str]] = []
    hints = typing.get_type_hints(VertexModelDeploymentInputs)

    def known(key: str) -> bool:
        return key in props and props[key] is not None and props[key] != _UNKNOWN

    for key in sorted(VertexModelDeploymentInputs.__required_keys__):
        if key not in props or props[key] is None:
            errors.append((key, f"{key}: missing; it is a required input of VertexModelDeployment"))
    for key in sorted(set(props) - set(hints) - {"__provider"}):
        errors.append(
            (key, f"{key}: not an input of VertexModelDeployment; remove it (inputs: {', '.join(hints)})")
        )
    for key, tp in hints.items():
        expected = _type_name(tp)
        value = props.get(key)
        if known(key) and not (isinstance(value, expected) or (expected is int and isinstance(value, float))):
            errors.append(
                (key, f"{key}: {value!r} is a {type(value).__name__}; it must be a {expected.__name__}")
            )
    if errors:
        return errors

    def rule(key: str, ok: bool, message: str) -> None:
        if known(key) and not ok:
            errors.append((key, f"{key}: {props[key]!r} {message}"))

    rule(
        "imageUri",
        bool(_ARTIFACT_REGISTRY_DIGEST_RE.match(str(props.get("imageUri")))),
        "is not an Artifact Registry image by digest; Vertex pulls only from Artifact Registry. Use the ServingImage "
        "output (REGION-docker.pkg.dev/PROJECT/REPO/IMAGE@sha256:...)",
    )
    rule(
        "acceleratorType",
        props.get("acceleratorType") in VERTEX_ACCELERATORS,
        f"is not a Vertex accelerator type; use one of {', '.join(VERTEX_ACCELERATORS)}",
    )
    rule("acceleratorCount", int(props.get("acceleratorCount") or 0) >= 1, "must be at least 1")
    rule(
        "minReplicas",
        int(props.get("minReplicas") or 0) >= 1,
        "must be at least 1 (Vertex cannot scale to zero)",
    )
    if known("minReplicas") and known("maxReplicas"):
        rule(
            "maxReplicas",
            props["maxReplicas"] >= props["minReplicas"],
            f"is below minReplicas {props['minReplicas']}",
        )
    rule("targetWaitingRequests", float(props.get("targetWaitingRequests") or 0) > 0, "must be above 0")
    rule(
        "deploymentTimeoutSeconds",
        60 <= int(props.get("deploymentTimeoutSeconds") or 0) <= MAX_DEPLOYMENT_TIMEOUT_SECONDS,
        f"must be between 60 and {MAX_DEPLOYMENT_TIMEOUT_SECONDS} s (Vertex's limit); use a smaller model, "
        "weights from gs://, or a faster GPU if the cold start needs more",
    )
    rule("sharedMemorySizeMb", int(props.get("sharedMemorySizeMb") or 0) >= 0, "must not be negative")
    rule(
        "invokeRoutePrefix",
        props.get("invokeRoutePrefix") == "/*",
        'must be "/*", the only value Vertex allows',
    )
    rule(
        "deploymentKey",
        bool(re.fullmatch(r"[a-z0-9_-]{1,63}", str(props.get("deploymentKey")))),
        "is not a valid label value; use 1-63 lower-case letters, digits, '-' or '_'",
    )
    match = _ENDPOINT_RE.match(str(props.get("endpointName")))
    rule("endpointName", bool(match), "is not projects/PROJECT/locations/REGION/endpoints/ID")
    if match and known("region"):
        rule(
            "region",
            match.group("region") == props["region"],
            f"differs from the endpoint's {match.group('region')}",
        )
    for key, value in (props.get("labels") or {}).items():
        if not (_LABEL_KEY_RE.match(key) and _LABEL_RE.match(str(value))):
            errors.append(
                ("labels", f"labels: {key!r}: {value!r} is not a valid GCP label; use [a-z0-9_-], <= 63")
            )
    secret = props.get("hfTokenSecretVersion")
    if known("hfTokenSecretVersion") and not _SECRET_VERSION_RE.match(str(secret)):
        errors.append(
            (
                "hfTokenSecretVersion",
                "hfTokenSecretVersion: must be a Secret Manager version name (projects/P/secrets/S/versions/V), never "
                "the token itself; put the token in a gcp.secretmanager.SecretVersion and pass its `name`",
            )
        )
    # The token must never reach a Model: Vertex keeps container args and env in plaintext.
    for key, value in props.items():
        if key != "hfTokenSecretVersion" and _HF_TOKEN_RE.search(json.dumps(value)):
            errors.append(
                (
                    key,
                    f"{key}: contains what looks like a Hugging Face token; pass it via hfTokenSecretVersion",
                )
            )
    return errors


_T = TypeVar("_T")


def _wait_with_progress(
    label: str,
    work: Callable[[], _T],
    budget_seconds: float,
    interval_seconds: float,
    log: Callable[[str], None],
) -> _T:
    """Run a blocking Vertex call while reporting progress every interval; give up after the budget."""
    started = time.monotonic()
    log(f"{label}: started (allowing up to {budget_seconds / 60:.0f} min)")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work)
    try:
        while True:
            try:
                result = future.result(timeout=interval_seconds)
                log(f"{label}: done after {time.monotonic() - started:.0f} s")
                return result
            except concurrent.futures.TimeoutError:
                elapsed = time.monotonic() - started
                if elapsed >= budget_seconds:
                    raise TimeoutError(f"{label} did not finish within {budget_seconds:.0f} s") from None
                log(f"{label}: still running after {elapsed:.0f} s")
    finally:
        pool.shutdown(wait=False)  # an abandoned operation keeps running in Vertex; the next run adopts it


def explain_google_error(err: BaseException, action: str, props: dict[str, Any]) -> str:
    """One message naming the cause and the fix, for the Google errors a deployment meets."""
    from google.api_core import exceptions as gexc  # light: api_core is not aiplatform

    text = str(getattr(err, "message", "") or err)
    lower = text.lower()
    gpu = f"{props.get('acceleratorCount')} x {props.get('acceleratorType')}"
    where = f"{props.get('machineType')} with {gpu} in {props.get('region')}"
    if isinstance(err, gexc.TooManyRequests) and "quota" in lower:
        return (
            f"{action} failed: Vertex AI quota exhausted for {where} ({text}). Fix: request more "
            f"'Custom model serving {props.get('acceleratorType')}' quota in {props.get('region')} (IAM & Admin > "
            "Quotas), or lower scaling.maxReplicas / hardware.gpuCount, or pick a region with quota."
        )
    if (
        isinstance(err, gexc.TooManyRequests | gexc.ServiceUnavailable)
        or "stockout" in lower
        or ("enough resources" in lower)
    ):
        return (
            f"{action} failed: Vertex AI has no capacity for {where} right now (stockout: {text}). Fix: retry "
            "later, use another region or GPU type, or a reservation; hardware.spot: false is less likely to stock out."
        )
    if isinstance(err, gexc.Forbidden):
        return (
            f"{action} failed: permission denied ({text}). Fix: the identity running Pulumi needs "
            "roles/aiplatform.user and roles/iam.serviceAccountUser on "
            f"{props.get('serviceAccount')}; the Vertex AI service agent needs to read the Artifact Registry image."
        )
    if (
        isinstance(err, gexc.GatewayTimeout | TimeoutError) or "deadline" in lower
    ) and "Deploying" not in action:
        return (
            f"{action} failed: Vertex AI did not answer in time ({text}). Fix: run `pulumi up` again; it resumes and "
            "adopts what this run created (found by its labels) instead of duplicating it."
        )
    if isinstance(err, gexc.GatewayTimeout | TimeoutError) or "deadline" in lower:
        return (
            f"{action} failed: timed out ({text}). The container did not become healthy on {props.get('healthRoute')} "
            f"within {props.get('deploymentTimeoutSeconds')} s. Fix: read the endpoint's container logs in Cloud "
            "Logging (a failed HF token read or a model download is the usual cause); pre-stage the weights in gs:// "
            "or raise the startup budget. The next `pulumi up` starts the deploy again."
        )
    if isinstance(err, gexc.NotFound):
        return f"{action} failed: not found ({text}). Fix: check that {props.get('endpointName')} exists in the region."
    if isinstance(err, gexc.GoogleAPICallError):
        return f"{action} failed: Vertex AI rejected the request ({type(err).__name__}: {text})."
    return f"{action} failed: {type(err).__name__}: {text}"


# ---------------------------------------------------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------------------------------------------------
class VertexModelDeploymentProvider(ResourceProvider):
    """CRUD for one vLLM deployment on one Vertex endpoint. Holds no credentials: it uses the ambient ADC."""

    # The pickled provider holds no secret (see the module docstring), so it need not be a secret in state.
    serialize_as_secret_always = False

    def __init__(
        self, api_endpoint: str | None = None, anonymous: bool = False, progress_interval: float = 60.0
    ):
        super().__init__()
        # Tests point api_endpoint at a local fake; None means the regional Google endpoint.
        self.api_endpoint = api_endpoint
        self.anonymous = anonymous
        self.progress_interval = progress_interval

    # -- Pulumi entry points -------------------------------------------------------------------------------
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [CheckFailure(prop, reason) for prop, reason in input_errors(news)]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in VertexModelDeploymentInputs.__annotations__ if olds.get(k) != news.get(k)]
        replaces = [k for k in changed if k in REPLACE_KEYS]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = _inputs_only(props)
        return CreateResult(
            deployment_id(inputs), self._guard("Creating the Vertex deployment", inputs, self._roll_out)
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        inputs = _inputs_only(news)
        if any(olds.get(k) != inputs.get(k) for k in REDEPLOY_KEYS):
            outs = self._guard("Updating the Vertex deployment (blue/green)", inputs, self._roll_out)
        else:
            outs = self._guard("Patching the Vertex deployment", inputs, lambda p: self._patch(olds, p))
        return UpdateResult(outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        inputs = _inputs_only(props)
        self._guard("Deleting the Vertex deployment", inputs, self._tear_down)

    # -- plumbing -----------------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        pulumi.log.info(f"vertex: {message}")

    def _guard(self, action: str, props: dict[str, Any], step: Callable[[dict[str, Any]], _T]) -> _T:
        """Turn Google errors into one clear VertexDeploymentError (raised `from None`: no chained stack traces)."""
        from google.api_core import exceptions as gexc

        try:
            return step(props)
        except VertexDeploymentError:
            raise
        except (gexc.GoogleAPIError, TimeoutError) as err:
            message = explain_google_error(err, action, props)
        raise VertexDeploymentError(message) from None

    def _aiplatform(self, props: dict[str, Any]) -> Any:
        from google.cloud import aiplatform  # lazy: ~2.5 s and ~190 MB

        credentials = None
        if self.anonymous:
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        aiplatform.init(
            project=props["project"],
            location=props["region"],
            api_endpoint=self.api_endpoint,
            api_transport="rest",
            credentials=credentials,
        )
        return aiplatform

    def _budget(self, props: dict[str, Any]) -> float:
        return float(props["deploymentTimeoutSeconds"] + PROVISIONING_MARGIN_SECONDS)

    def _our_models(self, aiplatform: Any, props: dict[str, Any]) -> list[Any]:
        return list(aiplatform.Model.list(filter=f'labels.{LABEL_DEPLOYMENT}="{props["deploymentKey"]}"'))

    # -- the convergent roll-out (create and blue/green update) ---------------------------------------------
    def _roll_out(self, props: dict[str, Any]) -> dict[str, Any]:
        aiplatform = self._aiplatform(props)
        endpoint = aiplatform.Endpoint(props["endpointName"])
        want = spec_hash(props)
        ours = self._our_models(aiplatform, props)
        ours_by_name = {m.resource_name: m for m in ours}
        deployed = {dm.id: dm for dm in endpoint.list_models()}
        ours_deployed = {i: dm for i, dm in deployed.items() if _base(dm.model) in ours_by_name}

        target_dm = next(
            (
                dm
                for dm in ours_deployed.values()
                if ours_by_name[_base(dm.model)].labels.get(LABEL_SPEC) == want
            ),
            None,
        )
        if target_dm is not None:
            model = ours_by_name[_base(target_dm.model)]
            self._log(f"adopting model {model.resource_name}, already deployed as {target_dm.id}")
        else:
            candidates = [m for m in ours if m.labels.get(LABEL_SPEC) == want]
            if candidates:
                model = candidates[0]
                self._log(f"adopting model {model.resource_name} left by an earlier run (same spec {want})")
            else:
                model = self._upload(aiplatform, props)
            target_dm = self._deploy(aiplatform, endpoint, model, deployed, props)
            endpoint = aiplatform.Endpoint(props["endpointName"])

        if dict(endpoint.traffic_split) != {target_dm.id: 100}:
            self._log(f"moving 100% of traffic to deployed model {target_dm.id}")
            endpoint.update(traffic_split={target_dm.id: 100})
        for old_id in [i for i in ours_deployed if i != target_dm.id]:
            self._log(f"undeploying the previous deployed model {old_id}")
            endpoint.undeploy(old_id)
        # Only models deployed nowhere: one still deployed elsewhere belongs to another endpoint's deployment.
        for stale in [
            m
            for m in self._our_models(aiplatform, props)
            if m.resource_name != model.resource_name and not m.gca_resource.deployed_models
        ]:
            self._log(f"deleting the previous model {stale.resource_name}")
            stale.delete()
        return self._outputs(props, model, target_dm.id, endpoint)

    def _upload(self, aiplatform: Any, props: dict[str, Any]) -> Any:
        def upload() -> Any:
            return aiplatform.Model.upload(
                display_name=props["displayName"],
                serving_container_image_uri=props["imageUri"],
                serving_container_command=["python3", "-c", BOOTSTRAP],
                serving_container_args=list(props["vllmArgs"]),
                serving_container_environment_variables=container_env(props),
                serving_container_ports=[int(props["containerPort"])],
                serving_container_health_route=props["healthRoute"],
                # Google allows only one of predictRoute and invokeRoutePrefix; invoke serves every OpenAI route
                # (https://cloud.google.com/vertex-ai/docs/predictions/use-arbitrary-custom-routes).
                serving_container_invoke_route_prefix=props["invokeRoutePrefix"],
                serving_container_shared_memory_size_mb=int(props["sharedMemorySizeMb"]) or None,
                serving_container_deployment_timeout=int(props["deploymentTimeoutSeconds"]),
                labels=model_labels(props),
            )

        return _wait_with_progress("uploading the model", upload, 1800, self.progress_interval, self._log)

    def _deploy(
        self, aiplatform: Any, endpoint: Any, model: Any, deployed: dict[str, Any], props: dict[str, Any]
    ) -> Any:
        """Deploy `model` beside what serves now (0% traffic until healthy); on failure leave no model behind."""
        split = dict(endpoint.traffic_split)
        traffic = {**split, "0": 0} if deployed and sum(split.values()) == 100 else {"0": 100}
        before = set(deployed)

        def deploy() -> None:
            endpoint.deploy(
                model,
                deployed_model_display_name=f"{props['deploymentKey']}-{spec_hash(props)}",
                traffic_split=traffic,
                machine_type=props["machineType"],
                accelerator_type=props["acceleratorType"],
                accelerator_count=int(props["acceleratorCount"]),
                min_replica_count=int(props["minReplicas"]),
                max_replica_count=int(props["maxReplicas"]),
                autoscaling_target_vllm_num_requests_waiting=autoscaling_target(props),
                spot=bool(props["spot"]),
                service_account=props["serviceAccount"],
                deploy_request_timeout=self._budget(props),
            )

        label = f"deploying {model.resource_name} on {int(props['minReplicas'])} x {props['machineType']}"
        try:
            _wait_with_progress(label, deploy, self._budget(props), self.progress_interval, self._log)
        except Exception as err:
            message = explain_google_error(err, "Deploying the model", props)
            cleanup = self._discard(model, endpoint)
            raise VertexDeploymentError(f"{message}{cleanup}") from None
        endpoint = aiplatform.Endpoint(props["endpointName"])
        new = [
            dm
            for dm in endpoint.list_models()
            if dm.id not in before and _base(dm.model) == model.resource_name
        ]
        if not new:
            raise VertexDeploymentError(
                f"Deploying {model.resource_name} reported success but no deployed model appeared"
            )
        return new[0]

    def _discard(self, model: Any, endpoint: Any) -> str:
        """Remove a model whose deploy failed, so nothing is left behind. Returns a note for the error message."""
        try:
            # Re-read: the failed deploy may have changed the endpoint.
            endpoint = type(endpoint)(endpoint.resource_name)
            for dm in endpoint.list_models():
                if _base(dm.model) == model.resource_name:
                    endpoint.undeploy(dm.id)
            model.delete()
            return f" Nothing was left behind: model {model.resource_name} was deleted."
        except Exception as err:  # the original error matters more; the next run adopts or deletes the model
            return (
                f" Removing model {model.resource_name} also failed ({type(err).__name__}); the next `pulumi up` "
                "adopts or deletes it (it carries this deployment's labels)."
            )

    # -- in-place patch: replicas and autoscaling, model metadata ------------------------------------------
    def _patch(self, olds: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
        aiplatform = self._aiplatform(props)
        from google.cloud.aiplatform_v1.types import AutoscalingMetricSpec, DedicatedResources, DeployedModel
        from google.protobuf import field_mask_pb2

        endpoint = aiplatform.Endpoint(props["endpointName"])
        model = aiplatform.Model(olds["modelName"])
        dm_id = olds["deployedModelId"]
        if any(olds.get(k) != props.get(k) for k in PATCH_KEYS):
            self._log(
                f"patching deployed model {dm_id}: replicas {props['minReplicas']}-{props['maxReplicas']}, "
                f"target {autoscaling_target(props)} waiting requests per replica (no redeploy)"
            )
            resources = DedicatedResources(
                min_replica_count=int(props["minReplicas"]),
                max_replica_count=int(props["maxReplicas"]),
                autoscaling_metric_specs=[
                    AutoscalingMetricSpec(
                        metric_name="prometheus.googleapis.com/vertex_vllm_num_requests_waiting",
                        target=autoscaling_target(props),
                    )
                ],
            )
            mask = field_mask_pb2.FieldMask(
                paths=[
                    "dedicated_resources.min_replica_count",
                    "dedicated_resources.max_replica_count",
                    "dedicated_resources.autoscaling_metric_specs",
                ]
            )
            operation = endpoint.api_client.mutate_deployed_model(
                endpoint=endpoint.resource_name,
                deployed_model=DeployedModel(id=dm_id, dedicated_resources=resources),
                update_mask=mask,
            )
            label = f"resizing deployed model {dm_id}"
            _wait_with_progress(
                label, operation.result, self._budget(props), self.progress_interval, self._log
            )
        if any(olds.get(k) != props.get(k) for k in METADATA_KEYS):
            self._log(f"updating the labels of {model.resource_name}")
            model.update(display_name=props["displayName"], labels=model_labels(props))
        return self._outputs(props, model, dm_id, aiplatform.Endpoint(props["endpointName"]))

    # -- delete: undeploy, then delete -----------------------------------------------------------------------
    def _tear_down(self, props: dict[str, Any]) -> None:
        from google.api_core import exceptions as gexc

        aiplatform = self._aiplatform(props)
        ours = {m.resource_name: m for m in self._our_models(aiplatform, props)}
        try:
            endpoint = aiplatform.Endpoint(props["endpointName"])
        except gexc.NotFound:
            endpoint = None  # the endpoint is gone, and with it every deployment
        if endpoint is not None:
            split = dict(endpoint.traffic_split)
            ours_deployed = [dm.id for dm in endpoint.list_models() if _base(dm.model) in ours]
            # The one serving traffic goes last: Vertex refuses to undeploy it while another model remains.
            for dm_id in sorted(ours_deployed, key=lambda i: split.get(i, 0)):
                self._log(f"undeploying deployed model {dm_id}")
                endpoint.undeploy(dm_id)
        for model in self._our_models(aiplatform, props):
            if model.gca_resource.deployed_models:
                continue  # still deployed on another endpoint: that endpoint's deployment owns it
            self._log(f"deleting model {model.resource_name}")
            model.delete()

    def _outputs(self, props: dict[str, Any], model: Any, dm_id: str, endpoint: Any) -> dict[str, Any]:
        endpoint = type(endpoint)(endpoint.resource_name)  # the final traffic split, as Vertex reports it
        return {
            **props,
            "modelName": model.resource_name,
            "deployedModelId": dm_id,
            "specHash": spec_hash(props),
            "trafficSplit": {k: int(v) for k, v in endpoint.traffic_split.items()},
        }


def _base(model_name: str) -> str:
    """A model resource name without its @version suffix."""
    return model_name.split("@", 1)[0]


def _inputs_only(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k in VertexModelDeploymentInputs.__annotations__}


class VertexModelDeployment(Resource, module="vertex", name="ModelDeployment"):
    """The vLLM Model uploaded and deployed to `endpointName`. Inputs: see VertexModelDeploymentInputs."""

    def __init__(
        self,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
        provider: VertexModelDeploymentProvider | None = None,
    ) -> None:
        super().__init__(provider or VertexModelDeploymentProvider(), name, dict(props), opts)
