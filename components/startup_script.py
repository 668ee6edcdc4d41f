"""The GCE boot: which boot image the VMs use, and the rendering of their startup script (pure).

Boot image: a Deep Learning VM (DLVM) image, family ``common-cu129-ubuntu-2204-nvidia-580``, not
Container-Optimized OS (COS).

- The autoscaling signal needs the Ops Agent: its Prometheus receiver scrapes ``localhost:8000/metrics`` into
  Managed Service for Prometheus (``prometheus.googleapis.com/vllm:num_requests_waiting/gauge``). The Ops
  Agent ships only as deb/rpm packages for Debian, Ubuntu, RHEL/Rocky, SLES (and Windows): COS is not one of
  its build targets (GoogleCloudPlatform/ops-agent, ``project.yaml``), and COS has no package manager to
  install it with ("Container-Optimized OS does not include a package manager", COS docs). The Ops Agent's
  own test matrix runs on a DLVM image (``ml-images:common-cu118-debian-11-py310``, same ``project.yaml``).
- ``vllm/vllm-openai:v0.33.0`` is a CUDA 13 build; CUDA 13 needs the NVIDIA R580 driver branch or newer.
  DLVM families whose names end in ``-nvidia-580`` ship that driver preinstalled: Google's image list
  (https://docs.cloud.google.com/deep-learning-vm/docs/images) gives
  ``pytorch-2-9-cu129-ubuntu-2204-nvidia-580-v20260416`` as its example image name, and public reports of
  ``common-cu129-ubuntu-2204-nvidia-580-v20260818`` show driver 580.173.02 on an L4. ``common-*`` is the
  framework-free base family. Its host CUDA 12.9 toolkit does not matter: the container brings its own
  CUDA 13 user space and needs only the kernel driver.
- COS with ``cos-extensions install gpu`` would cover the driver, but it reinstalls the driver on every
  boot and still leaves no supported way to run the Ops Agent.

The script checks the boot image instead of trusting it. It refuses to start vLLM when ``nvidia-smi`` is
missing, when the driver major is below ``MIN_DRIVER_MAJOR``, or when the NVIDIA Container Toolkit is
missing. Google does not list docker and the toolkit per DLVM image, so check them on one VM before a
rollout (docs/gce-boot.md, "Verify on a real VM").

The renderer fills the static template ``startup-script.sh`` with one block of ``readonly NAME=value``
lines, each value quoted with ``shlex.quote``. Only Secret Manager resource names go in, never a secret value.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import yaml

# --- Boot image ---------------------------------------------------------------------------------------------
BOOT_IMAGE_PROJECT = "deeplearning-platform-release"
BOOT_IMAGE_FAMILY = "common-cu129-ubuntu-2204-nvidia-580"
BOOT_IMAGE = f"projects/{BOOT_IMAGE_PROJECT}/global/images/family/{BOOT_IMAGE_FAMILY}"
# DLVM metadata key: installs the driver on first boot on a DLVM image that lacks it; a no-op on -nvidia-580.
BOOT_IMAGE_METADATA = {"install-nvidia-driver": "True"}
# CUDA 13 (vllm/vllm-openai v0.33.0) needs the R580 driver branch or newer.
MIN_DRIVER_MAJOR = 580

# --- Serving contract ------------------------------------------------------------------------------------
SERVE_PORT = 8000
# Above the global external Application LB's 600 s keep-alive: the LB, not vLLM, closes idle connections.
DEFAULT_KEEP_ALIVE_SECONDS = 620
CONTAINER_NAME = "vllm"
# The GCE component attaches the cache disk with this device_name: /dev/disk/by-id/google-<name> on the VM.
MODEL_CACHE_DEVICE_NAME = "model-cache"
DEFAULT_DRIVER_WAIT_SECONDS = 300
DEFAULT_DISK_WAIT_SECONDS = 60
OPS_AGENT_SCRAPE_INTERVAL_SECONDS = 30

TEMPLATE_NAME = "startup-script.sh"
PARAMS_MARKER = "# @@VLLM_GCP_RENDERED_PARAMS@@"

_SECRET_VERSION_RE = re.compile(
    r"projects/[a-z0-9-]{4,30}/secrets/[A-Za-z0-9_-]{1,255}/versions/(latest|[1-9][0-9]*)"
)
_REGIONAL_SECRET_RE = re.compile(r"projects/[^/]+/locations/[^/]+/secrets/.+")
_AR_IMAGE_RE = re.compile(
    r"(?P<host>[a-z0-9-]+-docker\.pkg\.dev)/[a-z][a-z0-9-]{4,28}[a-z0-9]/[a-z0-9][a-z0-9._-]*"
    r"/[a-z0-9][a-z0-9._/-]*@sha256:[0-9a-f]{64}"
)
_DEVICE_NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_CONTAINER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
# Flags that would carry a secret value on the command line; these come from Secret Manager instead.
_SECRET_FLAGS = ("--api-key", "--hf-token")
_SECRET_LOOKALIKE_RE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")


class StartupScriptParamError(ValueError):
    """A bad StartupScriptParams field: the message names the field, the bad value and the fix."""


def render_ops_agent_config(
    port: int = SERVE_PORT,
    scrape_interval_seconds: int = OPS_AGENT_SCRAPE_INTERVAL_SECONDS,
    job_name: str = "vllm",
) -> str:
    """Ops Agent config: its Prometheus receiver sends vLLM's /metrics to Managed Service for Prometheus."""
    config = {
        "metrics": {
            "receivers": {
                "prometheus": {
                    "type": "prometheus",
                    "config": {
                        "scrape_configs": [
                            {
                                "job_name": job_name,  # becomes resource.labels.job in Monitoring
                                "scrape_interval": f"{scrape_interval_seconds}s",
                                "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"localhost:{port}"]}],
                            }
                        ]
                    },
                }
            },
            "service": {"pipelines": {"prometheus_pipeline": {"receivers": ["prometheus"]}}},
        }
    }
    return yaml.safe_dump(config, sort_keys=False)


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _bad(field_name: str, value: object, fix: str) -> StartupScriptParamError:
    return StartupScriptParamError(f"StartupScriptParams.{field_name}: {value!r} is not valid. {fix}")


@dataclass(frozen=True)
class StartupScriptParams:
    """Everything the boot script needs. Secrets appear only as Secret Manager secret version resource names.

    image: the vLLM image in Artifact Registry, by digest
        (``us-central1-docker.pkg.dev/PROJECT/REPO/vllm-openai@sha256:<64 hex>``), never Docker Hub.
    vllm_args: the ``vllm serve`` arguments from ``components.vllm_args.render_vllm_args`` (the image's
        entrypoint is ``vllm serve``); they must pass ``--model`` and no secret flag.
    api_key_secret_version: ``projects/P/secrets/S/versions/V`` holding vLLM's API key; exported as
        ``VLLM_API_KEY`` (vLLM reads it when ``--api-key`` is absent), so it never appears in argv.
    hf_token_secret_version: the same for the Hugging Face token (``HF_TOKEN``); None for public or gs://.
    model_cache_device_name: device_name of the attached cache disk (PD, or a local SSD such as
        ``local-nvme-ssd-0``); it is formatted only when blank and mounted at /mnt/disks/<name>.
    gpu_count: GPUs the VM must show in nvidia-smi before vLLM starts.
    driver_wait_seconds: how long to wait for nvidia-smi at boot (a driver may still be loading).
    disk_wait_seconds: how long to wait for the cache disk's /dev/disk/by-id link to appear.
    """

    image: str
    vllm_args: Sequence[str]
    api_key_secret_version: str
    hf_token_secret_version: str | None = None
    model_cache_device_name: str = MODEL_CACHE_DEVICE_NAME
    gpu_count: int = 1
    port: int = SERVE_PORT
    keep_alive_seconds: int = DEFAULT_KEEP_ALIVE_SECONDS
    min_driver_major: int = MIN_DRIVER_MAJOR
    driver_wait_seconds: int = DEFAULT_DRIVER_WAIT_SECONDS
    disk_wait_seconds: int = DEFAULT_DISK_WAIT_SECONDS
    container_name: str = CONTAINER_NAME
    boot_image: str = BOOT_IMAGE
    ops_agent_config: str = field(default="")

    def __post_init__(self) -> None:
        # Frozen and hashable: keep a tuple whatever sequence the caller passed.
        if isinstance(self.vllm_args, str) or not all(isinstance(arg, str) for arg in self.vllm_args):
            raise _bad("vllm_args", self.vllm_args, "Pass a list of strings, e.g. render_vllm_args(model).")
        object.__setattr__(self, "vllm_args", tuple(self.vllm_args))
        if not self.ops_agent_config:
            object.__setattr__(self, "ops_agent_config", render_ops_agent_config(self.port))
        self._check_image()
        self._check_secrets()
        self._check_args()
        self._check_numbers()
        if not _DEVICE_NAME_RE.fullmatch(self.model_cache_device_name):
            raise _bad(
                "model_cache_device_name",
                self.model_cache_device_name,
                "Use the disk's GCE device_name (lower-case letters, digits, hyphens), e.g. 'model-cache'.",
            )
        if not _CONTAINER_NAME_RE.fullmatch(self.container_name):
            raise _bad(
                "container_name", self.container_name, "Use letters, digits, '_', '.', '-', e.g. 'vllm'."
            )
        if not isinstance(yaml.safe_load(self.ops_agent_config), dict):
            raise _bad(
                "ops_agent_config",
                self.ops_agent_config,
                "Pass a YAML mapping, e.g. render_ops_agent_config().",
            )

    @property
    def registry_host(self) -> str:
        return self.image.split("/", 1)[0]

    def _check_image(self) -> None:
        if not _AR_IMAGE_RE.fullmatch(self.image):
            raise _bad(
                "image",
                self.image,
                "Use the Artifact Registry reference by digest, "
                "REGION-docker.pkg.dev/PROJECT/REPO/IMAGE@sha256:<64 hex> (ServingImage's output): "
                "VMs must not pull a mutable tag or from Docker Hub.",
            )

    def _check_secrets(self) -> None:
        for name in ("api_key_secret_version", "hf_token_secret_version"):
            value = getattr(self, name)
            if value is None and name == "hf_token_secret_version":
                continue
            if isinstance(value, str) and _REGIONAL_SECRET_RE.fullmatch(value):
                raise _bad(name, value, "Regional secrets are not supported; use a global secret.")
            if not isinstance(value, str) or not _SECRET_VERSION_RE.fullmatch(value):
                # Never echo what might be a secret value back into an error message or a log.
                shown = value if isinstance(value, str) and value.startswith("projects/") else "<redacted>"
                raise _bad(
                    name,
                    shown,
                    "Pass a Secret Manager secret version resource name, "
                    "projects/PROJECT/secrets/SECRET/versions/VERSION, never the secret value itself.",
                )

    def _check_args(self) -> None:
        args = self.vllm_args
        if _flag_value(args, "--model") is None:
            raise _bad(
                "vllm_args", list(args), "Pass the model explicitly with --model (render_vllm_args does)."
            )
        for index, arg in enumerate(args):
            flag = arg.split("=", 1)[0]
            if flag in _SECRET_FLAGS or _SECRET_LOOKALIKE_RE.search(arg):
                what = repr(flag) if flag in _SECRET_FLAGS else f"argument #{index} looks like a token and"
                raise _bad(
                    "vllm_args",
                    "<redacted>",
                    f"{what}: secrets must not be vLLM arguments (argv is visible to every process on the "
                    "VM); the script reads them from Secret Manager "
                    "(api_key_secret_version, hf_token_secret_version).",
                )
            if "\0" in arg:
                raise _bad("vllm_args", arg, "Arguments cannot contain NUL bytes.")
        port = _flag_value(args, "--port")
        if port is not None and port != str(self.port):
            raise _bad(
                "vllm_args", f"--port {port}", f"vLLM must listen on port {self.port}, the published port."
            )

    def _check_numbers(self) -> None:
        if not 1 <= self.gpu_count <= 16:
            raise _bad("gpu_count", self.gpu_count, "Use the hardware.gpuCount of the machine type (1-16).")
        if not 1 <= self.port <= 65535:
            raise _bad("port", self.port, f"Use {SERVE_PORT}.")
        if not 600 < self.keep_alive_seconds <= 3600:
            raise _bad(
                "keep_alive_seconds",
                self.keep_alive_seconds,
                f"Use more than 600 (the load balancer's keep-alive), e.g. {DEFAULT_KEEP_ALIVE_SECONDS}.",
            )
        if self.min_driver_major < MIN_DRIVER_MAJOR:
            raise _bad(
                "min_driver_major",
                self.min_driver_major,
                f"The vLLM image is a CUDA 13 build: use {MIN_DRIVER_MAJOR} or more.",
            )
        for name in ("driver_wait_seconds", "disk_wait_seconds"):
            if not 0 <= getattr(self, name) <= 3600:
                raise _bad(name, getattr(self, name), "Use 0-3600 seconds.")


def _rendered_params_block(params: StartupScriptParams) -> str:
    scalars: dict[str, str | int] = {
        "VLLM_IMAGE": params.image,
        "REGISTRY_HOST": params.registry_host,
        "API_KEY_SECRET_VERSION": params.api_key_secret_version,
        "HF_TOKEN_SECRET_VERSION": params.hf_token_secret_version or "",
        "MODEL_CACHE_DEVICE_NAME": params.model_cache_device_name,
        "GPU_COUNT": params.gpu_count,
        "SERVE_PORT": params.port,
        "KEEP_ALIVE_SECONDS": params.keep_alive_seconds,
        "MIN_DRIVER_MAJOR": params.min_driver_major,
        "DRIVER_WAIT_SECONDS": params.driver_wait_seconds,
        "DISK_WAIT_SECONDS": params.disk_wait_seconds,
        "CONTAINER_NAME": params.container_name,
        "EXPECTED_BOOT_IMAGE": params.boot_image,
        # The script compares this with the file on disk via $(cat), which drops trailing newlines.
        "OPS_AGENT_CONFIG": params.ops_agent_config.rstrip("\n"),
    }
    # Values are literal data: a '$' or '`' in a vLLM argument is meant for vLLM, not for the shell.
    literal = "# shellcheck disable=SC2016  # literal data, single-quoted on purpose"
    lines = ["# ---- rendered by components/startup_script.py (values quoted with shlex.quote) ----"]
    for name, value in scalars.items():
        free_text = name == "OPS_AGENT_CONFIG"  # the other scalars are validated and cannot hold '$'
        lines += [literal] * free_text + [f"readonly {name}={shlex.quote(str(value))}"]
    lines += [
        literal,
        "readonly -a VLLM_ARGS=(" + " ".join(shlex.quote(arg) for arg in params.vllm_args) + ")",
    ]
    lines.append("# ---- end of rendered values ----")
    return "\n".join(lines)


def load_template() -> str:
    return resources.files("components").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def render_startup_script(params: StartupScriptParams) -> str:
    """The boot script of a VM: the static template, its marker line replaced by the rendered values."""
    template = load_template()
    if template.count(PARAMS_MARKER + "\n") != 1:
        raise RuntimeError(f"{TEMPLATE_NAME} must contain the line {PARAMS_MARKER!r} exactly once")
    return template.replace(PARAMS_MARKER + "\n", _rendered_params_block(params) + "\n", 1)
